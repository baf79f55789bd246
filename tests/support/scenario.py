"""What the subprocess-worker scenarios share: fresh streams with a fleet on each, and the ledger of records put.

* :class:`FreshStreams` creates, for one test, streams of their own (``<name>-<suffix>``), each with a results
  database and a :class:`~support.fleet.Fleet` (application ``<name>-app-<suffix>``) whose workers record every
  delivery there (``processors.RecordingProcessor`` and kin); :meth:`FreshStreams.close` stops every worker and
  deletes the streams.
* :class:`RecordScenario` is one application consuming one of those streams: it puts records, keeps every id
  put (→ the shard it landed in), and tells which were not processed yet.
* :class:`ClientVersionScenario` adds what the KCL 2.x → 3.x scenarios (``test_migration_scenario``,
  ``test_features_scenario``) watch: each worker instance's logged ``CurrentState`` metric, the lease spread
  and the ``Migration3.0`` item.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from integration.processors import RESULTS_ENV, WORKER_ENV, connect_results, read_processed
from shardwise.backends import open_coordinator_tables
from shardwise.versions.migration_rules import OPERATION
from shardwise.versions.migration_state import ClientVersion, MigrationState, MigrationStore
from support.fleet import Backend, Fleet, StreamAdmin
from support.traffic import keys_per_shard, some

__all__ = ["ClientVersionScenario", "FreshStreams", "RecordScenario"]

_METRIC_LINE = re.compile(rf"metric {OPERATION} (CurrentState:\w+)=1\b")


class FreshStreams:
    """Fresh streams for one test, each with its results database and its fleet; :meth:`close` cleans up."""

    def __init__(self, backend: Backend, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self._fleets: list[Fleet] = []
        self._admins: list[StreamAdmin] = []

    def open(
        self,
        name: str,
        shards: int,
        *,
        processor: str,
        worker_args: Sequence[str],
        results_file: str | None = None,
    ) -> tuple[Fleet, StreamAdmin, Path]:
        """A new stream of ``shards`` shards, an (empty) results database (``results_file`` in the test's
        directory, by default ``<name>-results.db``) and a fleet of ``processor`` workers on the stream, logging
        to ``logs/``."""
        suffix = uuid.uuid4().hex[:8]
        stream = f"{name}-{suffix}"
        admin = self.backend.stream_admin(stream)
        admin.create(shards)
        self._admins.append(admin)
        results = self.tmp_path / (results_file or f"{name}-results.db")
        connect_results(results).close()
        fleet = Fleet(
            self.backend,
            application=f"{name}-app-{suffix}",
            stream=stream,
            processor=processor,
            log_dir=self.tmp_path / "logs",
            worker_args=worker_args,
            env={RESULTS_ENV: str(results)},
            worker_id_env=WORKER_ENV,
        )
        self._fleets.append(fleet)
        return fleet, admin, results

    def close(self) -> None:
        """Stop every worker (none may outlive its test, whatever happened), then drop the streams."""
        for fleet in self._fleets:
            fleet.close()
        for admin in self._admins:
            if self.backend.kind == "aws":
                admin.delete()  # keeps the session's kinesis-local small and fast
            admin.close()


class RecordScenario:
    """One application consuming one fresh stream: the fleet, the stream's admin side, the results database and
    every record put (:attr:`produced`: id → the shard it landed in)."""

    #: How often :meth:`wait_all_processed` reads the results.
    processed_poll_s: ClassVar[float] = 0.5

    def __init__(self, fleet: Fleet, admin: StreamAdmin, results: Path) -> None:
        self.fleet = fleet
        self.admin = admin
        self.results = results
        self.produced: dict[str, str] = {}
        self._lock = threading.Lock()

    def shard_keys(self, shard_ids: Iterable[str] | None = None) -> list[str]:
        """One partition key per shard (of ``shard_ids``, by default every shard), in shard-id order."""
        ranges = {shard.shard_id: shard.hash_key_range for shard in self.admin.list_shards()}
        wanted = sorted(ranges) if shard_ids is None else list(shard_ids)
        return keys_per_shard({shard_id: ranges[shard_id] for shard_id in wanted})

    def put(self, entries: Sequence[tuple[str, str]]) -> list[str]:
        """Put ``(record id, partition key)`` records, the data being the id; returns the shard of each."""
        return self.put_data([(rid, rid.encode(), key) for rid, key in entries])

    def put_data(self, entries: Sequence[tuple[str, bytes, str]]) -> list[str]:
        """Put ``(record id, data, partition key)`` records in order; returns the shard each one landed in."""
        shards = self.admin.put([(data, key) for _, data, key in entries])
        assert len(shards) == len(entries)
        with self._lock:
            self.produced.update(zip((rid for rid, _, _ in entries), shards, strict=True))
        return shards

    def produced_now(self) -> dict[str, str]:
        with self._lock:
            return dict(self.produced)

    def processed_ids(self) -> set[str]:
        """The ids of the records delivered so far (the data of each delivery)."""
        return {row.data for row in read_processed(self.results)}

    def missing(self) -> set[str]:
        return set(self.produced_now()) - self.processed_ids()

    def wait_all_processed(self, timeout_s: float) -> None:
        self.fleet.wait_until(
            lambda: not self.missing(),
            timeout_s,
            lambda: f"all {len(self.produced)} records processed; missing {some(self.missing())}",
            interval_s=self.processed_poll_s,
        )


class ClientVersionScenario(RecordScenario):
    """A :class:`RecordScenario` whose ``workers`` (on ``shards`` shards) log their metrics (``--metrics log``):
    each worker instance's ``CurrentState``, the lease spread and the ``Migration3.0`` item."""

    def __init__(self, fleet: Fleet, admin: StreamAdmin, results: Path, *, workers: Sequence[str], shards: int) -> None:
        super().__init__(fleet, admin, results)
        self.workers = tuple(workers)
        self.shards = shards
        self._log_start: dict[str, int] = {}
        self._migration: MigrationStore | None = None

    # -- workers -----------------------------------------------------------------------------------------

    def start(self, worker_id: str, extra_args: Sequence[str] = ()) -> None:
        log = self.fleet.log_dir / f"{worker_id}.log"
        self._log_start[worker_id] = log.stat().st_size if log.exists() else 0
        self.fleet.start(worker_id, extra_args)

    def restart(self, worker_id: str, extra_args: Sequence[str] = ()) -> None:
        """SIGTERM (a graceful shutdown, which must exit 0), then start again with ``extra_args``."""
        code = self.fleet.terminate(worker_id)
        assert code == 0, f"{worker_id} exited {code} on SIGTERM\n{self.fleet.report()}"
        self.start(worker_id, extra_args)

    def stop_all(self) -> None:
        for worker_id in self.workers:
            code = self.fleet.terminate(worker_id)
            assert code == 0, f"{worker_id} exited {code} on SIGTERM\n{self.fleet.report()}"
        assert not self.fleet.alive(), self.fleet.report()

    def log(self, worker_id: str) -> str:
        """The log of the worker's current instance."""
        with self.fleet.workers[worker_id].log_path.open("rb") as log:
            log.seek(self._log_start[worker_id])
            return log.read().decode(errors="replace")

    def current_state(self, worker_id: str) -> str | None:
        """The last ``CurrentState`` metric the worker's current instance logged (None: none logged)."""
        found = _METRIC_LINE.findall(self.log(worker_id))
        return found[-1] if found else None

    def states(self) -> dict[str, str | None]:
        return {worker_id: self.current_state(worker_id) for worker_id in self.workers}

    def wait_states(self, expected: Mapping[str, str | None], timeout_s: float, what: str) -> None:
        self.fleet.wait_until(
            lambda: self.states() == dict(expected), timeout_s, lambda: f"{what}: CurrentState {self.states()}"
        )

    # -- leases and the migration item ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        held = self.fleet.held()
        return {worker_id: len(held.get(worker_id, [])) for worker_id in self.workers}

    def wait_everyone_holds(self, timeout_s: float, what: str) -> dict[str, int]:
        """Wait until all the leases are held by the workers, each holding at least one."""

        def spread() -> dict[str, int] | None:
            counts = self.counts()
            return counts if sum(counts.values()) == self.shards and min(counts.values()) >= 1 else None

        result = self.fleet.wait_until(spread, timeout_s, lambda: f"{what}: every worker ≥ 1 lease; {self.counts()}")
        assert result is not None
        return result

    def migration(self) -> MigrationState | None:
        """``Migration3.0`` as read now. The layout is detected afresh until the item exists: on DynamoDB a
        compatible-with-2x fleet starting afresh puts it in the legacy layout (``<app>-CoordinatorState``)."""
        if self._migration is not None:
            return self._migration.read()
        if not self.fleet.store.table_exists():
            return None
        store = MigrationStore(open_coordinator_tables(self.fleet.store, self.fleet.application).coordinator)
        state = store.read() if store.items.exists() else None
        if state is not None:
            self._migration = store
        return state

    def version(self) -> ClientVersion | None:
        state = self.migration()
        return None if state is None else state.version

    def wait_version(self, version: ClientVersion, timeout_s: float, what: str) -> MigrationState:
        def reached() -> MigrationState | None:
            state = self.migration()
            return state if state is not None and state.version is version else None

        state = self.fleet.wait_until(reached, timeout_s, lambda: f"{what}: cv {version.value}; now {self.migration()}")
        assert state is not None
        return state
