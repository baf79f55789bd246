"""The two lease-assignment generations side by side: DynamoDB capacity per worker-minute and lease moves.

For each size (shards × workers) and each generation (KCL 2.x lease-count taking, KCL 3.x leader with
utilization-aware assignment), the benchmark starts the workers in one process with default (KCL) timings,
each with its own DynamoDB client on moto's server and a request meter hooked on that client's events
(``tests/support/dynamodb_units.py``), feeds the local stream at a steady rate, lets the fleet settle, and then
measures a steady-state window:

* read units per worker-minute under two accountings: moto's flat ``ConsumedCapacity`` (1 unit per Scan or
  Query whatever its size), and DynamoDB's billing computed from the items each request actually read (item
  sizes, 4 KB read units, eventually consistent reads at half, a page's item sizes summed);
* write units per worker-minute (moto's ``ConsumedCapacity``) and requests per worker-minute, by kind
  (everything the workers sent to DynamoDB: lease table, owner index, coordinator and worker-metrics items);
* lease moves: owner changes seen in the lease table (sampled every 2 s with a separate, unmetered client).

Records live in the embedded local stream so that only the coordination traffic goes to DynamoDB.

    python bench/bench_generations.py [--minutes 5] [--warmup-seconds 180] [--sizes 1x1,8x4,64x8]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _common import record_results, standins
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.stream import LocalStreamStore
from shardwise.errors import TableNotFoundError
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.processor import BaseRecordProcessor, ProcessRecordsInput
from shardwise.worker import AssignmentMode, Worker, WorkerConfig
from support.dynamodb_units import ReadUnitsMeter, RequestStats

RECORDS_PER_SHARD_PER_SECOND = 20
FEATURE_CHECK_PROSE = (
    "Every worker of either generation checks the finalized feature levels every 30 s: from its own scan of the "
    "lease table when it made one since the last check (2.x taker, 3.x leader); a 3.x worker that does not lead "
    "reads the features record and the Migration3.0 item (eventually consistent) only when the finalized levels "
    "the leader publishes on the lock item change, a 2.x worker without a scan every 10th check; the 3.x leader "
    "takes its own leases from its scan instead of querying the owner index. The other 3.x workers query the "
    "owner index only when a renewal returns an assignment signal (or while they hold nothing or wait for a "
    "handoff, and every 5 minutes), read the leader lock eventually consistently once per lease duration (120 s), "
    "and scan for malformed leases only while the leader publishes some on the lock item; every worker's "
    "malformed-lease report otherwise rides on the scans it makes anyway."
)


class CheckpointingProcessor(BaseRecordProcessor):
    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        process_records_input.checkpointer.checkpoint()


@dataclass
class Result:
    generation: str
    shards: int
    workers: int
    minutes: float
    stats: RequestStats  # the whole fleet's, over the window
    lease_moves: int
    leases_per_worker: list[int]
    warmup_s: float = 0.0  # how long the fleet took to settle (or the cap)
    settled: bool = True  # whether it settled within the cap

    def per_worker_minute(self, value: float) -> float:
        return value / self.workers / self.minutes

    @property
    def flat_reads(self) -> float:
        return self.per_worker_minute(sum(self.stats.flat_read_units.values()))

    @property
    def billed_reads(self) -> float:
        return self.per_worker_minute(sum(self.stats.billed_read_units.values()))

    @property
    def flat_writes(self) -> float:
        return self.per_worker_minute(sum(self.stats.flat_write_units.values()))

    @property
    def requests(self) -> float:
        return self.per_worker_minute(sum(self.stats.requests.values()))


def _total(stats: list[RequestStats]) -> RequestStats:
    def add(pick: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for one in stats:
            for key, value in getattr(one, pick).items():
                total[key] = total.get(key, 0) + value
        return total

    return RequestStats(
        {k: int(v) for k, v in add("requests").items()},
        add("billed_read_units"),
        add("flat_read_units"),
        add("flat_write_units"),
        sum(one.filtered for one in stats),
    )


def run(
    endpoint: str,
    tmp: Path,
    generation: AssignmentMode,
    *,
    shards: int,
    workers: int,
    warmup_s: float,
    window_s: float,
    by_thread: bool = False,
    settle_s: float = 0.0,
) -> Result:
    """One fleet: start it, warm up (``warmup_s``; with ``settle_s``, until every worker holds its even share and
    no lease has moved for ``settle_s``, at most ``warmup_s``), then measure a ``window_s`` window."""
    app = f"gen-{generation}-{shards}x{workers}"
    streams = LocalStreamStore(tmp / f"{app}.db")
    streams.create_stream(app, shards)
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            batch = [(b"x" * 100, f"k{n + i}") for i in range(shards * RECORDS_PER_SHARD_PER_SECOND)]
            n += len(batch)
            streams.put_records(app, batch)
            stop.wait(1.0)

    def store() -> DynamoDBLeaseStore:
        return DynamoDBLeaseStore(
            DynamoDBLeaseStoreConfig(table_name=app), endpoint_url=endpoint, region_name="us-east-1"
        )

    stores = [store() for _ in range(workers)]  # one client and one request meter per worker
    meters = [ReadUnitsMeter() for _ in range(workers)]
    for meter, one in zip(meters, stores, strict=True):
        meter.attach(one.client, by_thread=by_thread)
    fleet = [
        Worker(
            WorkerConfig(
                app,
                app,
                worker_id=f"worker-{i + 1}",
                assignment=generation,
                initial_position=InitialPosition.trim_horizon(),
            ),
            store=stores[i],
            source=streams.stream(app),
            processor_factory=CheckpointingProcessor,
        )
        for i in range(workers)
    ]
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    threads = [threading.Thread(target=w.run, name=w.worker_id, daemon=True) for w in fleet]
    for thread in threads:
        thread.start()
    observer = store()

    def owners() -> dict[str, str | None]:
        try:
            return {lease.lease_key: lease.lease_owner for lease in observer.list_leases()}
        except TableNotFoundError:  # the first worker has not created it yet
            return {}

    started = time.monotonic()
    settled = settle_s <= 0
    if settled:
        time.sleep(warmup_s)
    else:
        even = {shards // workers, -(-shards // workers)}
        last, last_change = owners(), time.monotonic()
        while time.monotonic() - started < warmup_s:
            time.sleep(2.0)
            now_owners = owners()
            if now_owners != last:
                last, last_change = now_owners, time.monotonic()
            counts = [list(now_owners.values()).count(w.worker_id) for w in fleet]
            if set(counts) <= even and time.monotonic() - last_change >= settle_s:
                settled = True
                break
    warmed_s = time.monotonic() - started

    start_stats = [meter.snapshot() for meter in meters]
    previous = owners()
    moves = 0
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        time.sleep(2.0)
        current = owners()
        moves += sum(1 for key, owner in current.items() if key in previous and previous[key] != owner)
        previous = current
    window = [meter.snapshot().minus(start) for meter, start in zip(meters, start_stats, strict=True)]
    counts = sorted((list(previous.values()).count(w.worker_id) for w in fleet), reverse=True)
    stop.set()
    for worker in fleet:
        worker.request_shutdown()
    for thread in threads:
        thread.join(60)
    return Result(generation, shards, workers, window_s / 60, _total(window), moves, counts, warmed_s, settled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="steady-state window per run")
    parser.add_argument(
        "--warmup-seconds", type=float, default=180.0, help="warm-up (with --settle-seconds: its upper bound)"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=0.0,
        help="warm up until every worker holds its even share and no lease has moved for this long",
    )
    parser.add_argument("--sizes", default="1x1,8x4,64x8", help="comma-separated SHARDSxWORKERS")
    parser.add_argument(
        "--by-thread", action="store_true", help="break request kinds down by the worker loop that sent them"
    )
    args = parser.parse_args()
    sizes = [tuple(int(part) for part in size.split("x")) for size in args.sizes.split(",")]
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, standins.running(standins.start_moto(Path(tmp) / "logs")) as moto:
        for shards, workers in sizes:
            for generation in ("lease-count-2x", "utilization-3x"):
                result = run(
                    moto.endpoint_url,
                    Path(tmp),
                    generation,
                    shards=shards,
                    workers=workers,
                    warmup_s=args.warmup_seconds,
                    window_s=args.minutes * 60,
                    by_thread=args.by_thread,
                    settle_s=args.settle_seconds,
                )
                print(result, flush=True)
                results.append(result)
    lines = [
        "| shards × workers | generation | read units / worker-minute (moto, flat) | read units / worker-minute "
        "(DynamoDB billing) | write units / worker-minute (moto) | requests / worker-minute | "
        "lease moves in window | leases per worker at the end | warm-up |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        warmup = f"{r.warmup_s:,.0f} s" + ("" if r.settled else " (not settled)")
        lines.append(
            f"| {r.shards} × {r.workers} | {r.generation} | {r.flat_reads:,.2f} | {r.billed_reads:,.2f} | "
            f"{r.flat_writes:,.1f} | {r.requests:,.1f} | {r.lease_moves} | {'/'.join(map(str, r.leases_per_worker))} "
            f"| {warmup} |"
        )
    lines.append("")
    for shards, workers in sizes:
        pair = {r.generation: r for r in results if (r.shards, r.workers) == (shards, workers)}
        old, new = pair["lease-count-2x"], pair["utilization-3x"]
        flat = new.flat_reads / max(old.flat_reads, 1e-9)
        billed = new.billed_reads / max(old.billed_reads, 1e-9)
        lines.append(
            f"{shards} × {workers}: the 3.x generation reads {flat:.0%} of what the 2.x generation reads in moto's "
            f"flat accounting, {billed:.0%} in DynamoDB's billing.  "
        )
    lines += [
        "",
        "Where the requests go (per worker-minute: requests, then read units moto / DynamoDB billing):",
        "",
        "| shards × workers | generation | request kind | requests | read units (moto) | read units (billed) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        for kind in sorted(r.stats.requests, key=lambda k: -r.stats.requests[k]):
            lines.append(
                f"| {r.shards} × {r.workers} | {r.generation} | {kind} | "
                f"{r.per_worker_minute(r.stats.requests[kind]):,.2f} | "
                f"{r.per_worker_minute(r.stats.flat_read_units.get(kind, 0)):,.2f} | "
                f"{r.per_worker_minute(r.stats.billed_read_units.get(kind, 0)):,.2f} |"
            )
    filtered = sum(r.stats.filtered for r in results)
    warmup_prose = (
        f"{args.warmup_seconds:g} s warm-up"
        if args.settle_seconds <= 0
        else f"Warm-up until every worker holds its even share of the leases and no lease has moved for "
        f"{args.settle_seconds:g} s (at most {args.warmup_seconds:g} s; the table gives how long it took)"
    )
    lines.append(
        f"\nDefault (KCL) timings: failover 10 s (renewals every 3.3 s, 2.x taker scans every 20 s), 3.x leader "
        f"scans every 20 s (leases and worker metrics in one scan), worker metrics every 30 s. "
        f"{FEATURE_CHECK_PROSE} {warmup_prose}, then a {args.minutes:g}-minute window. "
        f"Streams get {RECORDS_PER_SHARD_PER_SECOND} records/s per "
        "shard and processors checkpoint every batch (about one write per shard per 1.5 s, the same in both "
        "generations). Two read accountings: moto's (it bills an UpdateItem 0.5 units where DynamoDB bills at "
        "least 1, and a Scan or Query 1 unit whatever its size, which understates what full scans of a 64-lease "
        "table cost on DynamoDB), and DynamoDB's billing computed by the benchmark from the items each response "
        "carried (tests/support/dynamodb_units.py: item size = attribute names + values by DynamoDB's sizing "
        "rules; GetItem per item ceil(size / 4 KB), a miss the minimum; Scan and Query the page's sizes summed, "
        "rounded up to 4 KB; eventually consistent reads at half). Requests with a filter expression bill the "
        f"items read before filtering, which no response shows: {filtered} such requests were made in these "
        "windows. Compare the generations with each other, not with an AWS bill (writes stay in moto's accounting)."
    )
    record_results(
        "Lease-assignment generations",
        f"python bench/bench_generations.py --minutes {args.minutes:g} --warmup-seconds {args.warmup_seconds:g} "
        + (f"--settle-seconds {args.settle_seconds:g} " if args.settle_seconds > 0 else "")
        + f"--sizes {args.sizes}{' --by-thread' if args.by_thread else ''}",
        lines,
    )


if __name__ == "__main__":
    main()
