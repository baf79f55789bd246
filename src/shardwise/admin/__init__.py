"""Administrative operations on an application's tables (no worker needed), through the backend seam
(:mod:`shardwise.backends`): nothing here knows which backend it runs on beyond its capabilities.

:mod:`shardwise.admin.migrate` — ``rollback``, ``rollforward`` and ``status`` of the KCL 2.x → 3.x client-version
migration, compatible with AWS's ``KclMigrationTool.py``; :mod:`shardwise.admin.features` — describe and change
feature versions (``shardwise features``).
"""

from __future__ import annotations

from shardwise.admin.migrate import (
    CleanupReport,
    Message,
    MigrationResult,
    MigrationStatus,
    MigrationTarget,
    WorkerMode,
    rollback,
    rollforward,
    status,
)

__all__ = [
    "CleanupReport",
    "Message",
    "MigrationResult",
    "MigrationStatus",
    "MigrationTarget",
    "WorkerMode",
    "rollback",
    "rollforward",
    "status",
]
