"""Which application ``shardwise migrate`` acts on, named as ``KclMigrationTool.py`` takes it (kcl-protocol.md §1.1),
and the tool's argument checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shardwise.admin.migrate.messages import (
    ARGS_ROLLBACK,
    ARGS_ROLLBACK_LEGACY,
    ARGS_ROLLFORWARD,
    ARGS_ROLLFORWARD_LEGACY,
    ARGS_STATUS,
)

__all__ = ["MigrationTarget"]


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """Which application to act on, named as ``KclMigrationTool.py`` takes it.

    Without ``coordinator_state_table_name`` / ``worker_metrics_table_name`` the arguments follow the tool at
    HEAD (KCL 3.5) and the layout is detected; passing either of them selects the KCL 3.0–3.4 tool's rules
    and the legacy layout with those tables. Empty strings count as not given.
    """

    application_name: str | None = None
    lease_table_name: str | None = None
    coordinator_state_table_name: str | None = None
    worker_metrics_table_name: str | None = None

    @property
    def legacy_arguments(self) -> bool:
        """Whether the legacy tables were named (the KCL 3.0–3.4 tool's arguments)."""
        return bool(self.coordinator_state_table_name or self.worker_metrics_table_name)

    @property
    def lease_table(self) -> str | None:
        return self.lease_table_name or self.application_name or None

    @property
    def coordinator_table(self) -> str | None:
        """The legacy coordinator state table (default ``<app>-CoordinatorState``)."""
        if self.coordinator_state_table_name:
            return self.coordinator_state_table_name
        return f"{self.application_name}-CoordinatorState" if self.application_name else None

    @property
    def worker_metrics_table(self) -> str | None:
        """The legacy worker metrics table (default ``<app>-WorkerMetricStats``)."""
        if self.worker_metrics_table_name:
            return self.worker_metrics_table_name
        return f"{self.application_name}-WorkerMetricStats" if self.application_name else None

    def validation_error(self, mode: Literal["rollback", "rollforward", "status"]) -> str | None:
        """The tool's argument error for ``mode`` (its exact wording), or ``None`` if the arguments suffice.

        HEAD: roll-forward needs the application name (even with a lease table name — the tool's quirk, kept);
        rollback the application name or the lease table name. KCL 3.0–3.4 (legacy table names given):
        roll-forward needs the application name or the coordinator state table name; rollback the application
        name or all three table names.
        """
        if self.application_name:
            return None
        if mode == "status":
            return None if self.lease_table_name else ARGS_STATUS
        if self.legacy_arguments:
            if mode == "rollforward":
                return None if self.coordinator_state_table_name else ARGS_ROLLFORWARD_LEGACY
            complete = self.lease_table_name and self.coordinator_state_table_name and self.worker_metrics_table_name
            return None if complete else ARGS_ROLLBACK_LEGACY
        if mode == "rollforward":
            return ARGS_ROLLFORWARD
        return None if self.lease_table_name else ARGS_ROLLBACK
