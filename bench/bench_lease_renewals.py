"""Conditional lease renewals per second, for each lease store.

Each renewal is one conditional write (``leaseCounter = c`` → ``c + 1``), exactly what a worker's renewer
does every failover/3. Leases are renewed round-robin from one thread, as one renewer would.

    python bench/bench_lease_renewals.py [--seconds 10] [--leases 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import record_results, standins, timed_rate
from shardwise.backends.aws.leases import DynamoDBLeaseStore, DynamoDBLeaseStoreConfig
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.checkpoint.sequence import TRIM_HORIZON
from shardwise.leases.model import Lease
from shardwise.leases.store import LeaseStore


def renewals_per_second(store: LeaseStore, leases: int, seconds: float) -> tuple[float, int, float]:
    store.create_table_if_not_exists()
    held: list[Lease] = []
    for i in range(leases):
        created = store.create_lease_if_not_exists(Lease(f"shardId-{i:012d}", TRIM_HORIZON))
        assert created is not None
        taken = store.take_lease(created, "bench-worker")
        assert taken is not None
        held.append(taken)

    def renew_all() -> int:
        for i, lease in enumerate(held):
            renewed = store.renew_lease(lease, throughput_kbps=1.5)
            if renewed is None:
                raise RuntimeError(f"lost lease {lease.lease_key} during the benchmark")
            held[i] = renewed
        return len(held)

    return timed_rate(renew_all, min_seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--leases", type=int, default=32)
    args = parser.parse_args()

    lines = ["| lease store | renewals/s | renewals | seconds |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_store = SQLiteLeaseStore(Path(tmp) / "bench.db", "bench-app")
        rate, count, secs = renewals_per_second(sqlite_store, args.leases, args.seconds)
        lines.append(f"| SQLite (WAL, file on local disk) | {rate:,.0f} | {count:,} | {secs:.1f} |")

        with standins.running(standins.start_moto(Path(tmp) / "logs")) as moto:
            ddb_store = DynamoDBLeaseStore(
                DynamoDBLeaseStoreConfig(table_name="bench-app"),
                endpoint_url=moto.endpoint_url,
                region_name="us-east-1",
            )
            rate, count, secs = renewals_per_second(ddb_store, args.leases, args.seconds)
            lines.append(f"| DynamoDB on moto server 127.0.0.1 | {rate:,.0f} | {count:,} | {secs:.1f} |")
    lines.append("")
    lines.append(
        f"{args.leases} leases renewed round-robin by one thread. moto's figure measures the stand-in "
        "(a Python HTTP server sharing the same 2 cores), not DynamoDB."
    )
    record_results(
        "Conditional lease renewals",
        f"python bench/bench_lease_renewals.py --seconds {args.seconds:g} --leases {args.leases}",
        lines,
    )


if __name__ == "__main__":
    main()
