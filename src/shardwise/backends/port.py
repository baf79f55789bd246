"""The backend seam: what a backend offers the rest of shardwise, and what it can do (capability flags).

A backend (``backends/sqlite``, ``backends/aws``) opens lease stores, stream sources and the coordinator item
tables of an application, in the layouts it supports. Code above the seam asks a backend what it *can* do
(:class:`Capabilities`) instead of asking which class it is; only ``backends/`` knows the concrete classes.
Every lease store a backend opens carries its backend (:class:`BackendBound`), so a worker handed a store can
reach the rest of its backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shardwise.leases.store import LeaseStore
from shardwise.retrieval.source import StreamSource
from shardwise.tables.items import CoordinatorTables, Layout

__all__ = ["Backend", "BackendBound", "Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do.

    * ``name``: ``"local"`` (embedded SQLite) or ``"aws"`` (DynamoDB + Kinesis), as in ``--backend``.
    * ``layouts``: the table layouts it can keep coordinator items in, the default first.
    * ``kcl_2x_peers``: whether KCL 2.x (Java) workers can share its lease tables. Such workers cannot parse
      non-lease items in a lease table, so a ``compatible-with-2x`` worker keeps coordinator items out of it,
      and a pure 2.x worker does not advertise feature ranges there.
    * ``owner_index``: whether its lease stores have the ``LeaseOwnerToLeaseKeyIndex`` KCL 3.x discovers with.
    """

    name: str
    layouts: tuple[Layout, ...]
    kcl_2x_peers: bool
    owner_index: bool


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


@runtime_checkable
class BackendBound(Protocol):
    """A lease store that knows the backend it belongs to."""

    @property
    def backend(self) -> Backend: ...
