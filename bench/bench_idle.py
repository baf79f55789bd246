"""Idle and cold-start cost of one worker process (issue 15, point 2).

Stand-ins: kinesis-local (Kinesis) and moto (DynamoDB, the leases), both on 127.0.0.1, with a counting proxy
(``bench/_counting_proxy.py``) between the worker and moto, so DynamoDB requests are counted by operation
outside the worker. Every worker is ``python -m shardwise run`` in its own process.

* **Idle**: one worker on a fresh application takes the 4 leases of an empty 4-shard stream; once it holds all
  4 and ``--settle-seconds`` have passed, one ``--window-seconds`` window measures its CPU (``/proc/PID/stat``,
  all threads) and its DynamoDB requests, per minute, for each idle time between reads (KCL's 1.5 s default
  and 200 ms) and each assignment generation; requests are compared with the renewal floor (leases × renewals
  per minute at the default failover time). With ``--profile-seconds``, the 200 ms worker of the first
  generation is then sampled by py-spy (attached, GIL holder only).
* **Cold start**: from spawning a fresh worker process (new application, 100 records waiting, TRIM_HORIZON)
  to its processor's first record: seconds and the process's CPU (``getrusage`` in the processor), against a
  bare GetRecords loop started the same way (``bench/_child.py``: a raw boto3 loop, and one on the fast
  ``KinesisStream``); medians of ``--rounds``. Then one worker start under ``-X importtime`` (the top import
  costs) and one under py-spy (where the start-up CPU goes).

    python bench/bench_idle.py [--window-seconds 60] [--settle-seconds 15] [--rounds 5] [--profile-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import boto3

from _common import ROOT, record_results, standins
from _profile import py_spy, py_spy_argv, summarize
from bench_consumer import child_env, fast_client_available, spawn_child
from shardwise.assignment.taker import TakerConfig

SHARDS = 4
GENERATIONS = ("lease-count-2x", "utilization-3x")
CPU_TARGETS_S_PER_MIN = {1500: 0.2, 200: 1.0}
CHILD = ROOT / "bench" / "_child.py"
BARE_BOTO3 = "bare loop, raw boto3 (`_child.py`)"
COLD_TARGET = 1.3  # worker CPU to first record / the bare boto3 loop's


def start_proxy(upstream: str, log_dir: Path) -> standins.Server:
    port = standins.free_port()
    log_path = log_dir / f"proxy-{port}.log"
    argv = [sys.executable, str(ROOT / "bench" / "_counting_proxy.py"), "--port", str(port), "--upstream", upstream]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = standins.Server("counting-proxy", process, port, log_path)
    for _ in range(200):
        try:
            proxy_counts(server)
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"counting proxy did not start: {log_path.read_text()}")


def proxy_counts(proxy: standins.Server, what: str = "counts") -> Counter[str]:
    url = f"{proxy.endpoint_url}/__{what}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - 127.0.0.1 only
        return Counter(json.loads(response.read()))


def cpu_ticks(pid: int, task: int | None = None) -> int:
    """utime + stime in clock ticks: of a process (all threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict[int, int]:
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ticks[int(task.name)] = cpu_ticks(pid, int(task.name))
        except (OSError, ValueError):
            continue
    return ticks


_THREAD_LINE = re.compile(r'^Thread (\d+) \(\w+\): "(.*)"')


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id → Python thread name (``py-spy dump``), pool threads' numbers dropped; {} without py-spy."""
    spy = py_spy()
    if spy is None:
        return {}
    done = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60, check=False)
    names = {}
    for line in done.stdout.splitlines():
        match = _THREAD_LINE.match(line)
        if match:
            names[int(match[1])] = re.sub(r"_\d+$", "_*", match[2])
    return names


def worker_argv(
    app: str, stream: str, kinesis: str, dynamodb: str, *, idle_ms: int, generation: str, client: str, processor: str
) -> list[str]:
    argv = [sys.executable, "-m", "shardwise", "run", f"_bench_processors:{processor}", "--app", app]
    argv += ["--stream", stream, "--backend", "aws", "--kinesis-endpoint-url", kinesis]
    argv += ["--dynamodb-endpoint-url", dynamodb, "--region", "us-east-1", "--initial-position", "TRIM_HORIZON"]
    argv += ["--idle-time-between-reads-ms", str(idle_ms), "--assignment", generation]
    if fast_client_available():
        argv += ["--set", f"retrieval.client={client}"]
    return argv


def env_for_workers(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT / "bench")])
    return {**env, **(extra or {})}


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def owned_leases(dynamodb: Any, table: str) -> int:
    try:
        items = dynamodb.scan(TableName=table)["Items"]
    except dynamodb.exceptions.ResourceNotFoundException:
        return 0
    return sum(1 for item in items if item.get("leaseOwner", {}).get("S") and item["leaseKey"]["S"].startswith("shard"))


def create_stream(kinesis: Any, name: str, records: int) -> None:
    kinesis.create_stream(StreamName=name, ShardCount=SHARDS)
    while kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)
    if records:
        entries = [{"Data": os.urandom(100), "PartitionKey": f"pk-{i}"} for i in range(records)]
        kinesis.put_records(StreamName=name, Records=entries)


class Setup:
    def __init__(self, kinesis_url: str, moto_url: str, proxy: standins.Server, tmp: Path) -> None:
        self.kinesis_url = kinesis_url
        self.moto_url = moto_url
        self.proxy = proxy
        self.tmp = tmp
        self.dynamodb = boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1")
        self.runs = 0

    def app(self, prefix: str) -> str:
        self.runs += 1
        return f"{prefix}-{self.runs}"


def idle_run(
    setup: Setup, *, idle_ms: int, generation: str, client: str, settle_s: float, window_s: float, profile_s: float
) -> dict[str, Any]:
    app = setup.app("idle")
    argv = worker_argv(
        app,
        "idle",
        setup.kinesis_url,
        setup.proxy.endpoint_url,
        idle_ms=idle_ms,
        generation=generation,
        client=client,
        processor="IdleProcessor",
    )
    process = spawn(argv, setup.tmp / f"{app}.log", env_for_workers())
    try:
        deadline = time.monotonic() + 180
        while owned_leases(setup.dynamodb, app) < SHARDS:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker {app} did not take {SHARDS} leases:\n{(setup.tmp / f'{app}.log').read_text()}"
                )
            time.sleep(0.5)
        time.sleep(settle_s)
        threads0, details0 = thread_ticks(process.pid), proxy_counts(setup.proxy, "details")
        counts0, ticks0, wall0 = proxy_counts(setup.proxy), cpu_ticks(process.pid), time.monotonic()
        time.sleep(window_s)
        counts1, ticks1, wall1 = proxy_counts(setup.proxy), cpu_ticks(process.pid), time.monotonic()
        threads1, details1 = thread_ticks(process.pid), proxy_counts(setup.proxy, "details")
        minutes = (wall1 - wall0) / 60
        held_at_end = owned_leases(setup.dynamodb, app)
        names = thread_names(process.pid)
        by_thread: Counter[str] = Counter()
        for task, ticks in threads1.items():
            by_thread[names.get(task, f"thread {task}")] += ticks - threads0.get(task, 0)
        profile: list[str] = []
        if profile_s > 0:
            profile = attach_profile(process.pid, profile_s, setup.tmp / f"{app}-profile.txt")
    finally:
        standins.stop_process(process, timeout_s=10)
    requests = {op: (counts1[op] - counts0[op]) / minutes for op in set(counts1) | set(counts0)}
    return {
        "cpu_s_per_min": (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / minutes,
        "requests_per_min": {op: n for op, n in requests.items() if n > 0},
        "held_at_end": held_at_end,
        "details": {
            key.replace(app, "APP"): (details1[key] - details0[key]) / minutes
            for key in details1
            if details1[key] > details0[key]
        },
        "profile": profile,
        "by_thread": {
            name: ticks / os.sysconf("SC_CLK_TCK") / minutes for name, ticks in by_thread.most_common() if ticks > 0
        },
    }


def attach_profile(pid: int, seconds: float, output: Path) -> list[str]:
    """py-spy attached to ``pid`` for ``seconds``: every thread that is running (its idle detection), not just
    the GIL holder — py-spy's ``--gil`` reads the *last* GIL holder, which overweights a thread that sleeps."""
    spy = py_spy()
    if spy is None:
        return ["(py-spy not installed)"]
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--nonblocking"]
    try:
        subprocess.run(
            [*argv, "--format", "raw", "--output", str(output)], capture_output=True, timeout=seconds + 120, check=False
        )
    except subprocess.TimeoutExpired:
        return ["(py-spy did not finish)"]
    return summarize(output, top=15) if output.exists() else ["(py-spy could not attach)"]


def wait_for_first(process: subprocess.Popen[bytes], path: Path, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no first record (exit {process.poll()})")
        time.sleep(0.01)
    result: dict[str, Any] = json.loads(path.read_text().splitlines()[0])
    return result


def cold_worker(
    setup: Setup, client: str, *, prefix: list[str] | None = None, xopt: list[str] | None = None
) -> dict[str, Any]:
    """Spawn a worker on a fresh application; seconds and CPU to its first record. ``prefix`` (py-spy) and
    ``xopt`` (``-X importtime``) change how it is started; stderr is kept for the latter."""
    app = setup.app("cold")
    first = setup.tmp / f"{app}.first"
    argv = worker_argv(
        app,
        "cold",
        setup.kinesis_url,
        setup.proxy.endpoint_url,
        idle_ms=1500,
        generation="lease-count-2x",
        client=client,
        processor="FirstRecordProcessor",
    )
    argv = [argv[0], *(xopt or []), *argv[1:]]
    log = setup.tmp / f"{app}.log"
    spawned = time.time()
    process = spawn([*(prefix or []), *argv], log, env_for_workers({"BENCH_FIRST_RECORD_FILE": str(first)}))
    try:
        result = wait_for_first(process, first)
    finally:
        if prefix:
            stop_profiled(process)
        else:
            standins.stop_process(process, timeout_s=10)
    return {"first_s": result["wall"] - spawned, "cpu_s": result["cpu_s"], "log": log}


def stop_profiled(spy: subprocess.Popen[bytes]) -> None:
    """Kill the worker py-spy started (its child, by PID), then let py-spy write its samples."""
    children = Path(f"/proc/{spy.pid}/task/{spy.pid}/children").read_text().split()
    for child in children:
        os.kill(int(child), signal.SIGKILL)
    spy.wait(timeout=60)


def cold_bare(setup: Setup, mode: str, client: str | None) -> dict[str, Any]:
    spec = {"mode": mode, "client": client, "endpoint_url": setup.kinesis_url, "stream": "cold", "expected": None}
    result = spawn_child(spec, timeout_s=120)
    return {"first_s": result["first_wall"] - result["spawn_wall"], "cpu_s": result["first_cpu_s"]}


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def import_costs(log: Path, top: int = 15) -> list[str]:
    """The top imports of a ``-X importtime`` run: by cumulative time (top-level and second-level imports
    only), and by self time."""
    rows = []
    for line in log.read_text().splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            rows.append((int(match[1]), int(match[2]), len(match[3]) // 2, match[4]))
    total = sum(self_us for self_us, _, _, _ in rows)
    cumulative = sorted((r for r in rows if r[2] <= 1), key=lambda r: -r[1])[:top]
    by_self = sorted(rows, key=lambda r: -r[0])[:top]
    lines = [f"{len(rows)} modules imported, {total / 1000:.0f} ms of import time in all (self times summed).", ""]
    lines += ["| module (depth ≤ 1) | cumulative ms |", "|---|---:|"]
    lines += [f"| `{'  ' * depth}{name}` | {cum / 1000:.1f} |" for _, cum, depth, name in cumulative]
    lines += ["", "| module | self ms |", "|---|---:|"]
    lines += [f"| `{name}` | {own / 1000:.1f} |" for own, _, _, name in by_self]
    return lines


def measure_cold(setup: Setup, clients: list[str], rounds: int) -> list[str]:
    """Worker and bare loops from spawn to first record, variants interleaved per round; the table lines."""
    runs: dict[str, list[dict[str, Any]]] = {}
    variants: list[tuple[str, str, str | None]] = [
        (f"worker (`shardwise run`, {c} client)", "worker", c) for c in clients
    ]
    variants.append((BARE_BOTO3, "bare-boto3", None))
    if "fast" in clients:
        variants.append(("bare loop, fast `KinesisStream` (`_child.py`)", "bare-fast", "fast"))
    for _ in range(rounds):
        for label, kind, client in variants:
            run = cold_worker(setup, client or "fast") if kind == "worker" else cold_bare(setup, kind, client)
            runs.setdefault(label, []).append(run)
            print(f"cold {label}: {run['first_s']:.3f} s, {run['cpu_s']:.3f} CPU s", flush=True)
    lines = ["| process | first record after spawn | CPU to first record | runs (s / CPU s) |", "|---|---:|---:|---|"]
    medians = {}
    for label, found in runs.items():
        medians[label] = statistics.median(r["cpu_s"] for r in found)
        detail = ", ".join(f"{r['first_s']:.2f} / {r['cpu_s']:.2f}" for r in found)
        first = statistics.median(r["first_s"] for r in found)
        lines.append(f"| {label} | {first:.3f} s | {medians[label]:.3f} s | {detail} |")
    lines.append("")
    bare = medians[BARE_BOTO3]
    for label, cpu in medians.items():
        if label.startswith("worker"):
            verdict = "meets" if cpu / bare <= COLD_TARGET else "above"
            lines.append(
                f"* {label} / bare raw boto3 loop, CPU to first record: × {cpu / bare:.2f} "
                f"({verdict} the {COLD_TARGET:g} target)"
            )
    return lines


def measure_start_up(setup: Setup, client: str, *, profile: bool) -> list[str]:
    """One worker start under ``-X importtime`` and (``profile``) one under py-spy: the report lines."""
    importtime = cold_worker(setup, client, xopt=["-X", "importtime"])
    lines = ["", f"### Imports of a worker start (`python -X importtime -m shardwise run …`, {client} client)", ""]
    lines += import_costs(importtime["log"])
    if profile and py_spy() is not None:
        raw = setup.tmp / "cold-profile.txt"
        cold_worker(setup, client, prefix=py_spy_argv(raw, rate_hz=500))
        lines += ["", f"### Profile: worker start to first record (py-spy, GIL holder, {client} client)", ""]
        lines += summarize(raw, top=20)
    return lines


def measure_empty_calls(setup: Setup, clients: list[str], calls: int = 300) -> list[str]:
    """CPU of one empty GetRecords per client (a caught-up iterator on the idle stream), and where it goes."""
    lines = ["| client | CPU ms per empty GetRecords | functions by inclusive CPU time (cProfile, % of the loop) |"]
    lines.append("|---|---:|---|")
    kinds = [*clients, "raw-boto3"] if "boto3" in clients else [*clients, "boto3", "raw-boto3"]
    for kind in kinds:
        spec: dict[str, Any] = {"mode": "empty-calls", "client": kind, "endpoint_url": setup.kinesis_url}
        spec.update(stream="idle", calls=calls)
        result = spawn_child(spec, timeout_s=300)
        top = "; ".join(f"`{name}` {cum:.0f} %" for name, cum, _own in result["top"])
        label = {"raw-boto3": "raw boto3 client", "boto3": "`KinesisStream`, boto3", "fast": "`KinesisStream`, fast"}
        lines.append(f"| {label[kind]} | {result['cpu_ms_per_call']:.3f} | {top} |")
    return lines


def measure_idle(setup: Setup, args: argparse.Namespace, clients: list[str], floor_per_min: float) -> list[str]:
    """Idle runs for every generation × idle time × client; the table lines, then the profile (if any)."""
    lines = [
        "| generation | client | idle between reads | CPU s/min | target | DynamoDB requests/min | × renewal floor | "
        "by operation (per min) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    profile: list[str] = []
    requests = ["", "DynamoDB requests per minute by operation, table (APP: the application's) and item key:", ""]
    threads = ["", "CPU s/min by thread (`/proc/PID/task/*/stat` over the window; names from `py-spy dump`):", ""]
    for generation in args.generations.split(","):
        for idle_ms in [int(v) for v in args.idle_ms.split(",")]:
            for client in clients:
                want_profile = not profile and idle_ms == 200 and args.profile_seconds > 0
                run = idle_run(
                    setup,
                    idle_ms=idle_ms,
                    generation=generation,
                    client=client,
                    settle_s=args.settle_seconds,
                    window_s=args.window_seconds,
                    profile_s=args.profile_seconds if want_profile else 0,
                )
                total = sum(run["requests_per_min"].values())
                ops = ", ".join(f"{op} {n:.1f}" for op, n in sorted(run["requests_per_min"].items()))
                target = CPU_TARGETS_S_PER_MIN.get(idle_ms)
                shown_target = "–" if target is None else f"≤ {target:g}"
                lines.append(
                    f"| {generation} | {client} | {idle_ms} ms | {run['cpu_s_per_min']:.2f} | {shown_target} | "
                    f"{total:.1f} | {total / floor_per_min:.2f} | {ops} |"
                )
                print(lines[-1], flush=True)
                shares = ", ".join(f"{name} {cpu:.2f}" for name, cpu in run["by_thread"].items())
                threads.append(f"* {generation}, {client}, {idle_ms} ms: {shares}")
                detail = ", ".join(f"{key} {n:.1f}" for key, n in sorted(run["details"].items(), key=lambda kv: -kv[1]))
                requests.append(f"* {generation}, {client}, {idle_ms} ms: {detail}")
                if run["held_at_end"] != SHARDS:
                    lines.append(f"| (held {run['held_at_end']} of {SHARDS} leases at the end) |||||||")
                if want_profile:
                    profile = [
                        "",
                        f"### Profile: idle worker, {generation}, {client} client, {idle_ms} ms between reads "
                        f"(py-spy attached for {args.profile_seconds:g} s after the window, running threads)",
                        "",
                        *run["profile"],
                    ]
    return lines + requests + threads + profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile-seconds", type=float, default=30.0, help="0: no profiles")
    parser.add_argument("--generations", default=",".join(GENERATIONS))
    parser.add_argument("--idle-ms", default="1500,200")
    parser.add_argument("--clients", default="fast")
    args = parser.parse_args()
    clients = args.clients.split(",") if fast_client_available() else ["boto3"]
    taker = TakerConfig()
    floor_per_min = SHARDS * 60_000 / taker.renewal_interval_ms
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with (
            standins.running(standins.start_moto(tmp / "logs")) as moto,
            standins.running(standins.start_kinesis_local(tmp / "logs")) as kinesis_local,
            standins.running(start_proxy(moto.endpoint_url, tmp)) as proxy,
        ):
            setup = Setup(kinesis_local.endpoint_url, moto.endpoint_url, proxy, tmp)
            kinesis = boto3.client("kinesis", endpoint_url=kinesis_local.endpoint_url, region_name="us-east-1")
            create_stream(kinesis, "idle", 0)
            create_stream(kinesis, "cold", 100)
            # Cold start first, while the stand-ins are fresh and quiet.
            cold_lines = measure_cold(setup, clients, args.rounds)
            start_up = measure_start_up(setup, clients[0], profile=args.profile_seconds > 0)
            empty_calls = measure_empty_calls(setup, clients)
            idle_lines = measure_idle(setup, args, clients, floor_per_min)
    lines = [
        "Idle: one worker holding the 4 leases of an empty 4-shard stream on kinesis-local, leases in DynamoDB "
        f"(moto); {args.window_seconds:g} s window after it holds all 4 and {args.settle_seconds:g} s more. "
        f"Renewal floor: {SHARDS} leases × 60,000 / {taker.renewal_interval_ms} ms (failover 10 s / 3 − 25 ms) = "
        f"{floor_per_min:.1f} UpdateItems per minute; the target is ≤ 1.1 × that. DynamoDB requests are every "
        "request the worker sent to moto, counted by the proxy.",
        "",
        *idle_lines,
        "",
        "One empty GetRecords (a caught-up iterator on the idle stream, kinesis-local), one thread, "
        "`time.thread_time` per call over 300 calls, then the same 300 under cProfile with a CPU-time clock:",
        "",
        *empty_calls,
        "",
        f"Cold start: a fresh process each time (median of {args.rounds}), 4 shards on kinesis-local with 100 "
        "records of 100 B waiting; worker: new application (lease table created on moto through the proxy), "
        "TRIM_HORIZON, default settings; CPU = the process's own from its start (interpreter and imports "
        "included) until the first record reaches the processor (worker) or the first non-empty GetRecords "
        "returns (bare loops, one thread per shard).",
        "",
        *cold_lines,
        *start_up,
    ]
    record_results(
        "Idle and cold-start cost (issue 15, point 2)",
        f"python bench/bench_idle.py --window-seconds {args.window_seconds:g} --settle-seconds "
        f"{args.settle_seconds:g} --rounds {args.rounds} --profile-seconds {args.profile_seconds:g} "
        f"--generations {args.generations} --idle-ms {args.idle_ms} --clients {args.clients}",
        lines,
    )


if __name__ == "__main__":
    main()
