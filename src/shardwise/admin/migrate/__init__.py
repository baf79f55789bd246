"""Roll a KCL 2.x → 3.x client-version migration back or forward, and show where it stands.

This is the library behind ``shardwise migrate rollback | rollforward | status``. It behaves like AWS's
``KclMigrationTool.py`` (kcl-protocol.md §1): the same preconditions, the same conditional writes of the
``Migration3.0`` item (``cv``, ``mts``, ``mb`` = ``KclMigrationTool-rollback`` / ``-rollforward``, and the
history ``h``: the previous ``{cv, mb, mts}`` pushed first, at most 10), the same clean-up after a rollback
(the GSI ``LeaseOwnerToLeaseKeyIndex``; in the legacy layout also the worker-metrics table; never the
coordinator state table) and, for each outcome, the tool's printed lines word for word — so runbooks keep
working. Shardwise adds lines of its own (``Message.origin == "shardwise"``) and differs where the tool is
unsafe or silent:

* every failure is a result with ``ok = False`` (the CLI exits 1), never a bare print;
* ``dry_run`` reads everything and reports what would change, writing nothing;
* the write is conditional on the ``cv`` **and** ``mts`` that were read, not only on ``cv`` being one of the
  allowed versions: a concurrent rollback/roll-forward (or an A→B→A sequence) in between makes it fail
  with the tool's conditional-failure message instead of overwriting a state — and a history — it never saw;
* instead of a blind 120 s sleep, clean-up waits until no worker is in a KCL 3.x mode any more (no fresh
  worker-metrics entry — KCL workers stop reporting in 2.x compatible mode —, or, where entries carry the
  worker's own ``cv``, none reports a 3.x version), with a timeout; then deletes the GSI and verifies it is
  gone; errors the tool swallows are reported;
* both layouts: the KCL 3.5 single-table layout (the item in the lease table, keyed ``leaseKey``; the tool
  at HEAD) and the legacy layout (the item in ``<app>-CoordinatorState``, keyed ``key``; the tool of KCL
  3.0–3.4), detected per application (legacy while ``<app>-CoordinatorState`` exists and the 3.5 table
  migration has not completed), or forced by passing the legacy table names as the old tool took them;
* the embedded SQLite backend (single-table; no GSI or table to delete).

Expected outcomes — refused preconditions, missing tables, lost races, backend errors — are results, never
exceptions; only programming errors raise.

The package: :mod:`.messages` (the tool's lines), :mod:`.target` (the arguments), :mod:`.results` (what is
reported), :mod:`.application` (the tables, opened through the backend seam), :mod:`.transitions` (rollback and
roll-forward), :mod:`.cleanup` (the wait and the deletions after a rollback), :mod:`.status`.
"""

from __future__ import annotations

from shardwise.admin.migrate.cleanup import (
    DEFAULT_ACTIVE_WINDOW_S,
    DEFAULT_GSI_TIMEOUT_S,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_WAIT_TIMEOUT_S,
)
from shardwise.admin.migrate.messages import GSI_NAME, MODIFIED_BY_ROLLBACK, MODIFIED_BY_ROLLFORWARD, UNKNOWN
from shardwise.admin.migrate.results import CleanupReport, Message, MigrationResult, MigrationStatus, WorkerMode
from shardwise.admin.migrate.status import format_epoch_ms, status
from shardwise.admin.migrate.target import MigrationTarget
from shardwise.admin.migrate.transitions import rollback, rollforward

__all__ = [
    "DEFAULT_ACTIVE_WINDOW_S",
    "DEFAULT_GSI_TIMEOUT_S",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_WAIT_TIMEOUT_S",
    "GSI_NAME",
    "MODIFIED_BY_ROLLBACK",
    "MODIFIED_BY_ROLLFORWARD",
    "UNKNOWN",
    "CleanupReport",
    "Message",
    "MigrationResult",
    "MigrationStatus",
    "MigrationTarget",
    "WorkerMode",
    "format_epoch_ms",
    "rollback",
    "rollforward",
    "status",
]
