"""The backend seam: what a backend offers the rest of shardwise, and what it can do (capability flags).

A backend (``backends/sqlite``, ``backends/aws``) opens lease stores, stream sources and the coordinator item
tables of an application, in the layouts it supports, and administers its tables (:class:`TableAdmin`: what
KCL's migration tool does with ``DescribeTable``, ``UpdateTable`` and ``DeleteTable``). Code above the seam asks
a backend what it *can* do (:class:`Capabilities`) instead of asking which class it is; only ``backends/``
knows the concrete classes. Every lease store a backend opens carries its backend (:class:`BackendBound`), so
a worker handed a store can reach the rest of its backend.

Backends translate their service's errors into :mod:`shardwise.errors` at this boundary, chaining the
original; :class:`ServiceError` is what the service said, for the callers that must print it as the service
put it (``KclMigrationTool.py``'s messages embed the SDK's error text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource
from shardwise.state.port import Changelog
from shardwise.tables.items import CoordinatorTables, ItemTable, Layout, Namespace

__all__ = ["Backend", "BackendBound", "Capabilities", "ServiceError", "TableAdmin"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do.

    * ``name``: ``"local"`` (embedded SQLite) or ``"aws"`` (DynamoDB + Kinesis), as in ``--backend``.
    * ``layouts``: the table layouts it can keep coordinator items in, the default first.
    * ``kcl_2x_peers``: whether KCL 2.x (Java) workers can share its lease tables. Such workers cannot parse
      non-lease items in a lease table, so a ``compatible-with-2x`` worker keeps coordinator items out of it,
      and a pure 2.x worker does not advertise feature ranges there.
    * ``owner_index``: whether its lease stores have the ``LeaseOwnerToLeaseKeyIndex`` KCL 3.x discovers with.
    * ``kcl_3x_resources``: whether KCL 3.x keeps resources of its own there that a rollback to 2.x deletes
      and KCL 3.x workers re-create (kcl-protocol.md §1.4): the owner index as a GSI of the lease table and,
      in the legacy layout, the worker-metrics table. False for the embedded backend, whose owner index is
      part of the schema and whose worker metrics live in the lease table.
    """

    name: str
    layouts: tuple[Layout, ...]
    kcl_2x_peers: bool
    owner_index: bool
    kcl_3x_resources: bool

    @property
    def legacy_layout(self) -> bool:
        """Whether it has KCL 3.0–3.4's separate coordinator-state and worker-metrics tables."""
        return "legacy" in self.layouts


@dataclass(frozen=True, slots=True)
class ServiceError:
    """What a backend's service (or its SDK) said when a request failed, behind the shardwise error it was
    translated into.

    * ``code``: the service's error code (DynamoDB's ``Error.Code``, e.g. ``ResourceInUseException``); when
      no answer came (a connection or protocol error), the SDK error's class name.
    * ``message``: the service's error message (without an answer: the SDK error's text).
    * ``text``: the SDK error as it prints, e.g. ``An error occurred (AccessDeniedException) when calling the
      UpdateTable operation: no``.
    * ``answered``: whether the service answered (False: the request never got an answer).
    """

    code: str
    message: str
    text: str
    answered: bool


class TableAdmin(Protocol):
    """Administration of a backend's tables, as KCL's ``KclMigrationTool.py`` does it: table and owner-index
    status, and deleting the KCL 3.x resources a rollback to 2.x cleans up.

    Failures raise :mod:`shardwise.errors` (the service's own answer stays readable with
    :func:`shardwise.backends.service_error`). Deletions start the deletion and do not wait: poll the status.
    A backend without KCL 3.x resources (``Capabilities.kcl_3x_resources`` false) deletes none of them and
    raises :class:`~shardwise.errors.ConfigurationError` when asked to.
    """

    @property
    def database_file(self) -> str | None:
        """The file an embedded backend keeps every table in, as it was named; ``None`` for a service."""
        ...

    def database_exists(self) -> bool:
        """Whether the backend's storage exists (always, for a service). An administrative read checks this
        before opening a lease store, which would create an embedded backend's database file."""
        ...

    def table_status(self, table_name: str) -> str | None:
        """The table's status (DynamoDB's ``TableStatus``: ``ACTIVE``, ``CREATING``, ``DELETING`` ...; an
        embedded lease table is ``ACTIVE``), or ``None`` when it does not exist."""
        ...

    def delete_table(self, table_name: str) -> None:
        """Start deleting the table. :class:`~shardwise.errors.ResourceNotFoundError` if it does not exist."""
        ...

    def owner_index_status(self, lease_table_name: str) -> str | None:
        """The ``IndexStatus`` of ``LeaseOwnerToLeaseKeyIndex`` on the lease table, or ``None`` when the index
        does not exist. :class:`~shardwise.errors.ResourceNotFoundError` if the table does not exist."""
        ...

    def delete_owner_index(self, lease_table_name: str) -> None:
        """Start deleting ``LeaseOwnerToLeaseKeyIndex`` from the lease table. Raises when the index or the
        table does not exist, or while the table is being modified (the service's code tells which)."""
        ...


class Backend(Protocol):
    """One backend, opened for one place (a SQLite file; an AWS region/endpoint)."""

    @property
    def capabilities(self) -> Capabilities: ...

    def open_lease_store(self, table_name: str) -> LeaseStore:
        """The lease store of one lease table (KCL: the application name)."""
        ...

    def open_stream(self, stream_name: str) -> StreamSource:
        """The stream source of one stream."""
        ...

    def open_coordinator_tables(
        self,
        store: LeaseStore,
        application_name: str,
        *,
        layout: Layout | None = None,
        coordinator_table_name: str | None = None,
        worker_metrics_table_name: str | None = None,
    ) -> CoordinatorTables:
        """The coordinator and worker-metrics item tables next to ``store``. ``layout=None`` detects it as
        KCL 3.5 does (the legacy layout while ``<app>-CoordinatorState`` exists, else single-table); a layout
        the backend does not support raises :class:`~shardwise.errors.ConfigurationError`."""
        ...

    def open_legacy_item_table(self, table_name: str, namespace: Namespace) -> ItemTable:
        """One item table of the legacy layout by its name alone (``<app>-CoordinatorState`` for the
        coordinator namespace, ``<app>-WorkerMetricStats`` for worker metrics), without a lease store: KCL
        3.0–3.4's migration tool takes these tables by name. A backend without the legacy layout raises
        :class:`~shardwise.errors.ConfigurationError`."""
        ...

    def table_admin(self) -> TableAdmin:
        """The administration of this backend's tables."""
        ...

    def open_changelog(self, application_name: str, *, table_name: str | None = None) -> Changelog:
        """The state changelog of an application (issue 14): the durable copy of each shard's committed state.
        ``table_name`` defaults to ``<application_name>-state`` (config ``state.changelog_table``): a DynamoDB
        table (on-demand; created by :meth:`~shardwise.state.port.Changelog.ensure_exists`, like the lease
        table), or a partition of the state tables in the embedded database file (created on first use).
        Opening makes no call; the first operation on a missing DynamoDB table raises
        :class:`~shardwise.errors.ChangelogMissingError`."""
        ...


@runtime_checkable
class BackendBound(Protocol):
    """A lease store that knows the backend it belongs to."""

    @property
    def backend(self) -> Backend: ...
