"""Administrative operations on an application's tables (no worker needed).

:mod:`shardwise.admin.migrate` — ``rollback``, ``rollforward`` and ``status`` of the KCL 2.x → 3.x client-version
migration, compatible with AWS's ``KclMigrationTool.py``.
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
