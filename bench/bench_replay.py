"""One worker process on one core against a replaying Kinesis (issue 15, benchmark b).

``bench/_replay_server.py`` (its own process, pinned to CPU 1, stopped by its PID) serves pre-encoded
GetRecords responses of 1 KiB records for N shards as fast as it can; one real ``Worker`` (``bench/_child.py``:
leases in SQLite, a processor that counts and checkpoints once per batch, idle time between reads 0) runs in
its own process pinned to CPU 0. After every shard has delivered and a warm-up, one window measures the
records/s and MiB/s the worker sustains, and its CPU use (1.0 = the whole core). With ``--profile-shards``,
that size is run once more per client under py-spy and the profile is written beside the figures.

    python bench/bench_replay.py [--shards 4,50,200] [--window-seconds 20] [--records-per-response 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, record_results, standins
from _profile import py_spy, py_spy_argv, summarize
from bench_consumer import child_env, fast_client_available

RECORD_BYTES = 1024
SERVER = ROOT / "bench" / "_replay_server.py"
CHILD = ROOT / "bench" / "_child.py"
TARGET_MIB_S = 100.0


def start_server(shards: int, records_per_response: int, log_dir: Path) -> standins.Server:
    port = standins.free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"replay-{port}.log"
    argv = [sys.executable, str(SERVER), "--port", str(port), "--shards", str(shards)]
    argv += ["--records-per-response", str(records_per_response), "--record-bytes", str(RECORD_BYTES), "--cpu", "1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = standins.Server("replay", process, port, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"replay server exited: {log_path.read_text()}")
        try:
            with socket.create_connection((standins.HOST, port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("replay server did not listen")


def run_worker(
    endpoint: str, shards: int, client: str | None, db: Path, *, warmup_s: float, window_s: float, profile: Path | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": "worker",
        "client": client,
        "endpoint_url": endpoint,
        "stream": "replay",
        "expected": None,
        "db": str(db),
        "idle_ms": 0,
        "cpu": 0,
        "shards": shards,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "timeout_s": 120,
    }
    argv = [sys.executable, str(CHILD), json.dumps(spec)]
    if profile is not None:
        argv = [*py_spy_argv(profile), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="4,50,200")
    parser.add_argument("--window-seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--records-per-response", type=int, default=1000)
    parser.add_argument("--profile-shards", type=int, default=50, help="0: no profile run")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: the worker on CPU 0, the replay server on CPU 1")
    clients: list[str | None] = ["fast", "boto3"] if fast_client_available() else [None]
    lines = [
        "| shards | client | records/s | MiB/s | worker CPU (cores) | µs CPU/record | GetRecords calls/s | max RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    profiles: list[str] = []
    at_target: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for shards in [int(s) for s in args.shards.split(",")]:
            with standins.running(start_server(shards, args.records_per_response, tmp / "logs")) as server:
                for client in clients:
                    name = client or "boto3 (no fast client in this checkout)"
                    db = tmp / f"replay-{shards}-{client}.db"
                    result = run_worker(
                        server.endpoint_url,
                        shards,
                        client,
                        db,
                        warmup_s=args.warmup_seconds,
                        window_s=args.window_seconds,
                        profile=None,
                    )
                    wall, records = result["window_wall"], result["window_records"]
                    rate = records / wall
                    mib = rate * RECORD_BYTES / 2**20
                    if shards == 50:
                        at_target[name] = mib
                    lines.append(
                        f"| {shards} | {name} | {rate:,.0f} | {mib:.1f} | {result['window_cpu_s'] / wall:.2f} | "
                        f"{result['window_cpu_s'] * 1e6 / max(1, records):.2f} | "
                        f"{records / args.records_per_response / wall:,.0f} | {result['max_rss_kib'] / 1024:.0f} MiB |"
                    )
                    print(lines[-1], flush=True)
                    if shards == args.profile_shards and py_spy() is not None:
                        raw = tmp / f"profile-{shards}-{client}.txt"
                        run_worker(
                            server.endpoint_url,
                            shards,
                            client,
                            tmp / f"profile-{shards}-{client}.db",
                            warmup_s=args.warmup_seconds,
                            window_s=args.window_seconds,
                            profile=raw,
                        )
                        profiles += [
                            "",
                            f"### Profile: {shards} shards, {name} client (py-spy, whole worker process, all "
                            "threads, start-up included)",
                            "",
                            *summarize(raw),
                        ]
    verdict = [
        f"* 50 shards, {name}: {mib:.1f} MiB/s — {'meets' if mib >= TARGET_MIB_S else 'below'} the "
        f"{TARGET_MIB_S:.0f} MiB/s target (50 shards × 2 MiB/s)"
        for name, mib in at_target.items()
    ]
    lines += [
        "",
        *verdict,
        "",
        f"{RECORD_BYTES}-byte records, {args.records_per_response:,} records per GetRecords response "
        f"(≈{args.records_per_response * RECORD_BYTES / 2**20:.2f} MiB of data), served pre-encoded by "
        "`bench/_replay_server.py` pinned to CPU 1; one worker process pinned to CPU 0 (`os.sched_setaffinity`): "
        "a real `Worker`, leases in SQLite, default settings except idle time between reads 0 ms "
        "(max records 10,000, 16 consumer threads, dispatch poll 20 ms), a processor that counts and "
        f"checkpoints once per batch. Window: {args.window_seconds:g} s after every shard delivered and a "
        f"{args.warmup_seconds:g} s warm-up. MiB/s counts record data (records × {RECORD_BYTES} B), not the "
        "base64 JSON on the wire (about 1.37 × that). Worker CPU is the process's (getrusage) over the window.",
        *profiles,
    ]
    record_results(
        "Replay: one worker on one core (issue 15 b)",
        f"python bench/bench_replay.py --shards {args.shards} --window-seconds {args.window_seconds:g} "
        f"--warmup-seconds {args.warmup_seconds:g} --records-per-response {args.records_per_response} "
        f"--profile-shards {args.profile_shards}",
        lines,
    )


if __name__ == "__main__":
    main()
