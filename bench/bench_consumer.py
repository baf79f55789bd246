"""End-to-end consumer, fast vs boto3 data-plane client, side by side (issue 15, benchmark a).

For each stand-in (kinesalite, kinesis-local) a 4-shard stream is pre-filled with 200-byte records; then every
variant reads all of it from TRIM_HORIZON, each in its own fresh process (``bench/_child.py``), so CPU is the
whole process's from its start (interpreter, imports, client construction included):

* ``worker``: a real ``Worker`` (leases in SQLite, default settings, a processor that counts and checkpoints
  once per batch) on ``KinesisStream(..., data_client="fast" | "boto3")``;
* ``bare``: a GetRecords loop, one thread per shard — on ``KinesisStream.get_records`` with the fast client,
  and on a raw ``boto3.client("kinesis").get_records`` for boto3.

Reported per variant (median of ``--rounds`` runs, variants interleaved within each round): CPU µs/record
cold (from process start to the last record) and steady (after the first delivered batch), seconds from
spawning the process to its first record, records/s (first to last record); and the ratios boto3/fast.

    python bench/bench_consumer.py [--kinesalite-records 100000] [--kinesis-local-records 12000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from _common import ROOT, record_results, standins
from shardwise.backends.aws.kinesis import KinesisStream

SHARDS = 4
RECORD_BYTES = 200
CHILD = ROOT / "bench" / "_child.py"


def fast_client_available() -> bool:
    """Whether this checkout's ``KinesisStream`` has the ``data_client`` switch (the fast client)."""
    return "data_client" in inspect.signature(KinesisStream).parameters


@dataclass(frozen=True)
class Variant:
    label: str
    mode: str  # _child.py mode
    client: str | None  # KinesisStream data_client, None for the raw boto3 loop


def variants(fast: bool) -> list[Variant]:
    found = [
        Variant("worker, boto3 client", "worker", "boto3" if fast else None),
        Variant("bare loop, raw boto3", "bare-boto3", None),
    ]
    if fast:
        found = [
            Variant("worker, fast client", "worker", "fast"),
            *found[:1],
            Variant("bare loop, fast", "bare-fast", "fast"),
            *found[1:],
        ]
    return found


def child_env() -> dict[str, str]:
    env = {**os.environ, **standins.FAKE_AWS_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def spawn_child(spec: dict[str, Any], *, timeout_s: float = 900) -> dict[str, Any]:
    """Spawn ``_child.py`` with ``spec`` and wait; its result (the last JSON line it printed) with
    ``spawn_wall`` (when it was spawned) added."""
    spawn = time.time()
    done = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {spec['mode']} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["spawn_wall"] = spawn
    return result


def run_child(spec: dict[str, Any], *, timeout_s: float = 900) -> dict[str, Any]:
    """:func:`spawn_child`, which must have read every record it expected."""
    result = spawn_child(spec, timeout_s=timeout_s)
    if not result["ok"]:
        raise RuntimeError(f"child {spec['mode']} did not read everything: {result}")
    return result


def fill(endpoint: str, records: int) -> dict[str, int]:
    """Create the 4-shard stream ``bench`` and put ``records`` records of 200 B; records per shard."""
    client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
    client.create_stream(StreamName="bench", ShardCount=SHARDS)
    while client.describe_stream_summary(StreamName="bench")["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)
    per_shard: dict[str, int] = {}
    for start in range(0, records, 500):
        batch = [
            {
                "Data": f"{i:010d}".encode() + os.urandom((RECORD_BYTES - 10) // 2).hex().encode(),
                "PartitionKey": f"pk-{i}",
            }
            for i in range(start, min(records, start + 500))
        ]
        response = client.put_records(StreamName="bench", Records=batch)  # type: ignore[arg-type]
        assert response.get("FailedRecordCount", 0) == 0
        for entry in response["Records"]:
            per_shard[entry["ShardId"]] = per_shard.get(entry["ShardId"], 0) + 1
    return per_shard


@dataclass(frozen=True)
class Figures:
    cold_us: float
    steady_us: float
    first_s: float
    records_per_s: float


def figures(result: dict[str, Any], total: int) -> Figures:
    steady_records = max(1, total - result["first_batch"])
    return Figures(
        cold_us=result["end_cpu_s"] * 1e6 / total,
        steady_us=(result["end_cpu_s"] - result["first_cpu_s"]) * 1e6 / steady_records,
        first_s=result["first_wall"] - result["spawn_wall"],
        records_per_s=steady_records / max(1e-9, result["end_wall"] - result["first_wall"]),
    )


def median_figures(runs: list[Figures]) -> Figures:
    return Figures(
        cold_us=statistics.median(r.cold_us for r in runs),
        steady_us=statistics.median(r.steady_us for r in runs),
        first_s=statistics.median(r.first_s for r in runs),
        records_per_s=statistics.median(r.records_per_s for r in runs),
    )


def measure(
    name: str, endpoint: str, per_shard: dict[str, int], *, rounds: int, tmp: Path, fast: bool
) -> dict[str, tuple[Figures, list[Figures]]]:
    total = sum(per_shard.values())
    runs: dict[str, list[Figures]] = {v.label: [] for v in variants(fast)}
    for round_no in range(rounds):
        for variant in variants(fast):
            spec: dict[str, Any] = {
                "mode": variant.mode,
                "client": variant.client,
                "endpoint_url": endpoint,
                "stream": "bench",
                "expected": per_shard,
                "db": str(tmp / f"{name}-{round_no}-{variant.mode}-{variant.client}.db"),
            }
            result = run_child(spec)
            runs[variant.label].append(figures(result, total))
            print(f"{name} round {round_no + 1} {variant.label}: {runs[variant.label][-1]}", flush=True)
    return {label: (median_figures(found), found) for label, found in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinesalite-records", type=int, default=100_000)
    parser.add_argument("--kinesis-local-records", type=int, default=12_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fast = fast_client_available()
    lines = [
        "| stand-in | records | variant | CPU µs/record cold | CPU µs/record steady | first record after "
        "spawn | records/s | runs (cold / steady µs) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    ratio_lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, start, records in (
            ("kinesalite", standins.start_kinesalite, args.kinesalite_records),
            ("kinesis-local", standins.start_kinesis_local, args.kinesis_local_records),
        ):
            with standins.running(start(tmp / "logs")) as server:
                per_shard = fill(server.endpoint_url, records)
                results = measure(name, server.endpoint_url, per_shard, rounds=args.rounds, tmp=tmp, fast=fast)
            for label, (med, runs) in results.items():
                detail = ", ".join(f"{r.cold_us:.1f} / {r.steady_us:.1f}" for r in runs)
                lines.append(
                    f"| {name} | {records:,} | {label} | {med.cold_us:.1f} | {med.steady_us:.1f} | "
                    f"{med.first_s:.3f} s | {med.records_per_s:,.0f} | {detail} |"
                )
            if fast:
                for kind, slow_label, fast_label in (
                    ("worker", "worker, boto3 client", "worker, fast client"),
                    ("bare loop", "bare loop, raw boto3", "bare loop, fast"),
                ):
                    slow, quick = results[slow_label][0], results[fast_label][0]
                    ratio_lines.append(
                        f"* {name}, {kind}: boto3/fast CPU cold × {slow.cold_us / quick.cold_us:.2f}, steady × "
                        f"{slow.steady_us / quick.steady_us:.2f}; records/s fast/boto3 × "
                        f"{quick.records_per_s / slow.records_per_s:.2f}"
                    )
            worker = results["worker, fast client" if fast else "worker, boto3 client"][0]
            bare = results["bare loop, fast" if fast else "bare loop, raw boto3"][0]
            ratio_lines.append(
                f"* {name}: worker/bare loop on the {'fast' if fast else 'boto3'} client, CPU cold × "
                f"{worker.cold_us / bare.cold_us:.2f}, steady × {worker.steady_us / bare.steady_us:.2f}"
            )
    if not fast:
        ratio_lines.append("* the fast client is not in this checkout (`KinesisStream` has no `data_client`)")
    lines += [
        "",
        "Ratios (medians):",
        "",
        *ratio_lines,
        "",
        f"4 shards, {RECORD_BYTES}-byte records pre-loaded, read from TRIM_HORIZON until every record is seen; "
        f"median of {args.rounds} rounds, the variants interleaved in each round, every run a fresh process "
        "(`bench/_child.py`). CPU is the child process's own (`getrusage`, all threads, from process start: "
        "interpreter start-up and imports included); *cold* = all of it / all records, *steady* = after the "
        "first delivered batch / the records after it. *First record*: from spawning the process to the first "
        "record handed over (worker: to the processor, with SQLite lease table creation, shard sync and lease "
        "taking; bare: the first non-empty GetRecords). records/s: first record to last. Worker: default "
        "settings (idle time between reads 1.5 s, max records 10,000; the stand-ins return up to 10,000 records "
        "per call). The stand-in shares the machine's 2 cores with the consumer, so records/s includes its cost; "
        "CPU figures do not.",
    ]
    record_results(
        "Fast vs boto3 client, end to end (issue 15 a)",
        f"python bench/bench_consumer.py --kinesalite-records {args.kinesalite_records} "
        f"--kinesis-local-records {args.kinesis_local_records} --rounds {args.rounds}",
        lines,
    )


if __name__ == "__main__":
    main()
