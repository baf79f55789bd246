"""What the fault scenarios share: their own stand-ins, a fleet whose workers each talk to them through a fault
proxy per service, a producer that notes when each record was put, and the figures each scenario writes.

* :class:`StandIns` — a moto server (DynamoDB) and a kinesalite (Kinesis) of the test's own, so pausing or
  loading them disturbs no other test; :meth:`StandIns.pause_dynamodb` SIGSTOPs moto by its PID.
* :class:`FaultFleet` — a :class:`~support.fleet.Fleet` of ``ledger_processor:LedgerProcessor`` workers; each
  worker gets a :class:`~support.faultproxy.FaultProxy` for DynamoDB and one for Kinesis (its
  ``--dynamodb-endpoint-url`` / ``--kinesis-endpoint-url``: the last occurrence of a click option wins), while
  the test observes the lease table and puts records directly.
* :class:`LedgerProducer` — one record per shard every tick (ids ``r-<tick>-<n>``), each noted with its shard and
  the ``time.monotonic()`` at which the put was acknowledged.
* :class:`Figures` — lost, duplicates, longest overlap, time to recover, written as JSON to
  ``$SHARDWISE_FAULTS_RESULTS`` (default: the test's directory) for ``tests/faults/report.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from faults.ledger import (
    Delivery,
    Overlap,
    duplicates,
    longest_overlap,
    lost,
    read_deliveries,
    read_events,
    recovery_s,
    tenures,
)
from faults.ledger_processor import LEDGER_ENV, WORKER_ENV, connect_ledger
from support import standins
from support.faultproxy import FaultProxy, Faults
from support.fleet import Backend, Fleet, StreamAdmin, taker_interval_s
from support.traffic import ProducerThread, keys_per_shard, some

__all__ = [
    "FAULTS_DIR",
    "RESULTS_ENV",
    "FaultFleet",
    "Figures",
    "LedgerProducer",
    "StandIns",
    "base_worker_args",
    "taker_interval_s",
]

FAULTS_DIR = Path(__file__).resolve().parent
RESULTS_ENV = "SHARDWISE_FAULTS_RESULTS"
PROCESSOR = "ledger_processor:LedgerProcessor"


def base_worker_args(failover_ms: int) -> list[str]:
    """Compressed timings every scenario's workers share."""
    return [
        "--initial-position",
        "TRIM_HORIZON",
        "--failover-time-ms",
        str(failover_ms),
        "--idle-time-between-reads-ms",
        "200",
        "--max-records",
        "200",
        "--set",
        "shard_sync_interval_ms=2000",
        "--set",
        "consumer.task_backoff_time_ms=200",
        "--set",
        "consumer.parent_shard_poll_interval_ms=300",
    ]


# -- stand-ins -----------------------------------------------------------------------------------------------


class StandIns:
    """A moto server and a kinesalite of this test's own."""

    def __init__(self, log_dir: Path) -> None:
        self.moto = standins.start_moto(log_dir)
        try:
            self.kinesalite = standins.start_kinesalite(log_dir)
        except BaseException:
            self.moto.stop()
            raise
        self._paused = False

    def backend(self) -> Backend:
        return Backend.aws(
            kinesis_endpoint_url=self.kinesalite.endpoint_url, dynamodb_endpoint_url=self.moto.endpoint_url
        )

    def pause_dynamodb(self) -> None:
        os.kill(self.moto.process.pid, signal.SIGSTOP)
        self._paused = True

    def resume_dynamodb(self) -> None:
        os.kill(self.moto.process.pid, signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        if self._paused:
            with contextlib.suppress(ProcessLookupError):
                self.resume_dynamodb()
        self.kinesalite.stop()
        self.moto.stop()


# -- the fleet -----------------------------------------------------------------------------------------------


@dataclass
class WorkerProxies:
    dynamodb: FaultProxy
    kinesis: FaultProxy

    def both(self) -> tuple[FaultProxy, FaultProxy]:
        return (self.dynamodb, self.kinesis)


class FaultFleet:
    """Workers of one application on a fresh stream of ``shards`` shards, each behind its own fault proxies."""

    def __init__(
        self,
        stand_ins: StandIns,
        tmp_path: Path,
        *,
        name: str,
        shards: int,
        worker_args: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.stand_ins = stand_ins
        self.backend = stand_ins.backend()
        suffix = uuid.uuid4().hex[:6]
        self.stream = f"{name}-{suffix}"
        self.admin: StreamAdmin = self.backend.stream_admin(self.stream)
        self.admin.create(shards)
        self.ledger = tmp_path / f"{name}-ledger.db"
        connect_ledger(self.ledger).close()
        self.fleet = Fleet(
            self.backend,
            application=f"{name}-app-{suffix}",
            stream=self.stream,
            processor=PROCESSOR,
            log_dir=tmp_path / "logs",
            worker_args=worker_args,
            env={LEDGER_ENV: str(self.ledger), **(env or {})},
            worker_id_env=WORKER_ENV,
            pythonpath=(FAULTS_DIR,),
        )
        self.proxies: dict[str, WorkerProxies] = {}

    @property
    def application(self) -> str:
        return self.fleet.application

    def start(self, worker_id: str, extra_env: dict[str, str] | None = None) -> None:
        """Start (or restart) a worker behind its proxies (made on its first start, kept across restarts)."""
        if worker_id not in self.proxies:
            self.proxies[worker_id] = WorkerProxies(
                FaultProxy(
                    "dynamodb", self.stand_ins.moto.port, seed=zlib.crc32(worker_id.encode()), name=f"{worker_id}-ddb"
                ),
                FaultProxy(
                    "kinesis",
                    self.stand_ins.kinesalite.port,
                    seed=zlib.crc32(worker_id.encode()) + 1,
                    name=f"{worker_id}-kin",
                ),
            )
            for proxy in self.proxies[worker_id].both():
                proxy.start()
        proxies = self.proxies[worker_id]
        args = ["--dynamodb-endpoint-url", proxies.dynamodb.endpoint_url]
        args += ["--kinesis-endpoint-url", proxies.kinesis.endpoint_url]
        self.fleet.start(worker_id, args, extra_env)

    def all_proxies(self, service: str | None = None) -> list[FaultProxy]:
        return [p for wp in self.proxies.values() for p in wp.both() if service is None or p.service == service]

    def set_faults(self, faults: Faults, service: str | None = None) -> None:
        for proxy in self.all_proxies(service):
            proxy.set(faults)

    def heal_all(self) -> None:
        for proxy in self.all_proxies():
            proxy.heal()

    def proxy_counts(self) -> dict[str, dict[str, int]]:
        return {proxy.name: dict(proxy.counts) for proxy in self.all_proxies()}

    def owners(self) -> dict[str, str | None]:
        """Lease key → owner, as the lease table says now."""
        return {lease.lease_key: lease.lease_owner for lease in self.fleet.leases()}

    def wait_spread(self, workers: Sequence[str], shards: int, timeout_s: float) -> dict[str, str | None]:
        """Wait until every lease is owned by a running worker and each of ``workers`` holds at least one."""

        def spread() -> dict[str, str | None] | None:
            owners = self.owners()
            held = Counter(owner for owner in owners.values() if owner is not None)
            ok = len(owners) == shards and all(owners.values()) and all(held[w] >= 1 for w in workers)
            return owners if ok else None

        result = self.fleet.wait_until(spread, timeout_s, lambda: f"every worker holding a lease: {self.owners()}")
        assert result is not None
        return result

    def wait_delivering(self, since: float, shards: Sequence[str], timeout_s: float) -> None:
        """Wait until every shard has delivered a record after ``since`` (monotonic)."""

        def delivering() -> bool:
            seen = {d.shard_id for d in read_deliveries(self.ledger) if d.t >= since}
            return seen >= set(shards)

        self.fleet.wait_until(delivering, timeout_s, "every shard delivering")

    def wait_all_delivered(self, ids: Sequence[str], timeout_s: float) -> None:
        def missing() -> set[str]:
            return lost(ids, read_deliveries(self.ledger))

        self.fleet.wait_until(lambda: not missing(), timeout_s, lambda: f"all delivered; missing {some(missing())}")

    def close(self) -> None:
        try:
            self.fleet.close()
        finally:
            for proxy in self.all_proxies():
                proxy.stop()
            with contextlib.suppress(Exception):
                self.admin.delete()


@contextlib.contextmanager
def fault_fleet(stand_ins: StandIns, tmp_path: Path, **kwargs: object) -> Iterator[FaultFleet]:
    fleet = FaultFleet(stand_ins, tmp_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield fleet
    finally:
        fleet.close()


# -- traffic ---------------------------------------------------------------------------------------------------


class LedgerProducer(ProducerThread):
    """Puts one record per shard every ``tick_s`` (ids ``r-<tick>-<n>``), directly to the stream (never through
    a proxy), and notes each record's shard and acknowledgement time in :attr:`put_at`."""

    def __init__(self, admin: StreamAdmin, tick_s: float, max_s: float = 600.0) -> None:
        super().__init__(name="ledger-producer")
        ranges = {shard.shard_id: shard.hash_key_range for shard in admin.list_shards()}
        self._keys = keys_per_shard(ranges)
        self._admin = admin
        self._tick_s = tick_s
        self._max_ticks = int(max_s / tick_s)
        self._lock = threading.Lock()
        self.put_at: dict[str, tuple[str, float]] = {}

    def produce(self) -> None:
        started = time.monotonic()
        for tick in range(self._max_ticks):
            if self.stop.is_set():
                return
            ids = [f"r-{tick:06d}-{n}" for n in range(len(self._keys))]
            shards = self._admin.put([(rid.encode(), key) for rid, key in zip(ids, self._keys, strict=True)])
            acked = time.monotonic()
            with self._lock:
                self.put_at.update({rid: (shard, acked) for rid, shard in zip(ids, shards, strict=True)})
            self.stop.wait(max(0.0, started + (tick + 1) * self._tick_s - time.monotonic()))

    def snapshot(self) -> dict[str, tuple[str, float]]:
        with self._lock:
            return dict(self.put_at)


# -- figures ---------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One scenario's figures, as written to ``<results>/<scenario>.json``."""

    scenario: str
    title: str
    failover_time_ms: int
    produced: int
    lost: int
    duplicates: int
    longest_overlap_s: float
    overlap_detail: str
    recovery_s: float | None
    bound_applies: bool
    notes: list[str] = field(default_factory=list)
    proxy_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    test: str = ""
    date_utc: str = ""
    commit: str = ""

    @property
    def bound_held(self) -> bool:
        return self.longest_overlap_s * 1000 <= self.failover_time_ms

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.scenario}.json"
        path.write_text(json.dumps({**asdict(self), "bound_held": self.bound_held}, indent=2) + "\n")
        return path


def measure(
    fleet: FaultFleet,
    producer: LedgerProducer,
    *,
    scenario: str,
    title: str,
    failover_ms: int,
    fault_end: float,
    bound_applies: bool,
    notes: Sequence[str] = (),
    test: str = "",
) -> Figures:
    """The figures of a finished scenario (the producer stopped, every record given time to be delivered)."""
    deliveries: list[Delivery] = read_deliveries(fleet.ledger)
    put_at = producer.snapshot()
    overlap: Overlap | None = longest_overlap(tenures(deliveries, read_events(fleet.ledger)))
    detail = (
        "none"
        if overlap is None
        else f"{overlap.shard_id}: {overlap.workers[0]} and {overlap.workers[1]}, {overlap.seconds:.1f} s"
    )
    return Figures(
        scenario=scenario,
        title=title,
        failover_time_ms=failover_ms,
        produced=len(put_at),
        lost=len(lost(put_at, deliveries)),
        duplicates=duplicates(deliveries),
        longest_overlap_s=round(overlap.seconds, 3) if overlap else 0.0,
        overlap_detail=detail,
        recovery_s=None if (r := recovery_s(put_at, deliveries, fault_end)) is None else round(r, 2),
        bound_applies=bound_applies,
        notes=list(notes),
        proxy_counts=fleet.proxy_counts(),
        test=test,
        date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
    )


def _commit() -> str:
    """The commit of the shardwise code under test (the checkout ``shardwise`` is imported from; ``+dirty`` with
    uncommitted changes in its ``src``), or "" outside git."""
    import shardwise

    git = ["git", "-C", str(Path(shardwise.__file__).resolve().parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return ""
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=False)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def results_dir(default: Path) -> Path:
    value = os.environ.get(RESULTS_ENV)
    return Path(value) if value else default
