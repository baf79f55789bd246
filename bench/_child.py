"""One consumer in its own process, for the benchmarks that measure from process start.

    python bench/_child.py '<json spec>'

Prints one JSON line: wall-clock times (``time.time()``, so the parent can subtract the moment it spawned this
process) and CPU seconds of this whole process (all threads, from process start: ``resource.getrusage``) at
the first delivered batch and at the end. Imports only what its mode needs, so a bare boto3 loop pays for
boto3 alone.

Modes (``spec["mode"]``):

* ``bare-boto3``: a raw ``boto3.client("kinesis").get_records`` loop, one thread per shard;
* ``bare-fast``: the same loop on ``KinesisStream.get_records`` (``spec["client"]``: ``fast`` or ``boto3``);
* ``empty-calls``: ``spec["calls"]`` GetRecords on a caught-up iterator (``client``: ``fast``, ``boto3`` or
  ``raw-boto3``): CPU per empty call, and a cProfile of that loop;
* ``worker``: a real :class:`~shardwise.worker.Worker` (leases in SQLite, a processor that counts and
  checkpoints once per batch) on ``KinesisStream(..., data_client=spec["client"])``.

``spec["expected"]`` maps shard id → records to read from TRIM_HORIZON (``None``: stop at the first record,
for cold-start runs); ``spec["window_s"]`` instead runs until then and reports throughput after
``spec["warmup_s"]`` (the replay benchmark); ``spec["cpu"]`` pins this process to that CPU.
"""

# ruff: noqa: PLC0415 - each mode imports only what it needs: the point of measuring from process start

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Progress:
    """Counts records from any thread; marks the first batch and the end (all expected, or the window)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        expected = spec.get("expected")
        self.target: int | None = None if expected is None else sum(expected.values())
        self.first_only = expected is None and spec.get("window_s") is None
        self.window_s: float | None = spec.get("window_s")
        self.warmup_s: float = spec.get("warmup_s", 0.0)
        self.count = 0
        self.batches = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.first: tuple[float, float, int] | None = None  # (wall, cpu, records in the first batch)
        self.shards_seen: set[str] = set()

    def add(self, n: int, shard_id: str = "") -> None:
        if n == 0:
            return
        with self.lock:
            self.count += n
            self.batches += 1
            self.shards_seen.add(shard_id)
            if self.first is None:
                self.first = (time.time(), cpu_s(), n)
                if self.first_only:
                    self.done.set()
            if self.target is not None and self.count >= self.target:
                self.done.set()


def _bare_boto3(spec: dict[str, Any], progress: Progress) -> None:
    import boto3

    client = boto3.client("kinesis", endpoint_url=spec["endpoint_url"], region_name="us-east-1")
    stream = spec["stream"]
    shard_ids = [shard["ShardId"] for shard in client.list_shards(StreamName=stream)["Shards"]]

    def drain(shard_id: str) -> None:
        want = None if spec.get("expected") is None else spec["expected"].get(shard_id, 0)
        got = 0
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while iterator and not progress.done.is_set() and (want is None or got < want):
            response = client.get_records(ShardIterator=iterator, Limit=spec.get("limit", 10_000))
            records = response["Records"]
            for record in records:
                _ = record["Data"]
            got += len(records)
            progress.add(len(records), shard_id)
            iterator = response.get("NextShardIterator")

    _threads(shard_ids, drain)


def _kinesis_stream(spec: dict[str, Any]) -> Any:
    from shardwise.backends.aws.kinesis import KinesisStream

    kwargs: dict[str, Any] = {"endpoint_url": spec["endpoint_url"], "region_name": "us-east-1"}
    if spec.get("client") is not None:
        kwargs["data_client"] = spec["client"]
    return KinesisStream(spec["stream"], **kwargs)


def _bare_stream(spec: dict[str, Any], progress: Progress) -> None:
    from shardwise.retrieval.model import StartingPosition

    source = _kinesis_stream(spec)
    shard_ids = [shard.shard_id for shard in source.list_shards()]

    def drain(shard_id: str) -> None:
        want = None if spec.get("expected") is None else spec["expected"].get(shard_id, 0)
        got = 0
        iterator = source.get_shard_iterator(shard_id, StartingPosition.trim_horizon())
        while iterator is not None and not progress.done.is_set() and (want is None or got < want):
            result = source.get_records(iterator, limit=spec.get("limit", 10_000))
            for record in result.records:
                _ = record.data
            got += len(result.records)
            progress.add(len(result.records), shard_id)
            iterator = result.next_iterator

    _threads(shard_ids, drain)


def _threads(shard_ids: list[str], drain: Any) -> None:
    threads = [threading.Thread(target=drain, args=(shard_id,), daemon=True) for shard_id in shard_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _worker(spec: dict[str, Any], progress: Progress) -> None:
    from shardwise.backends.sqlite.leases import SQLiteLeaseStore
    from shardwise.leasing.shard_sync import InitialPosition
    from shardwise.lifecycle.consumer import ConsumerConfig
    from shardwise.processor import BaseRecordProcessor, InitializationInput, ProcessRecordsInput
    from shardwise.worker import Worker, WorkerConfig

    class CountingProcessor(BaseRecordProcessor):
        shard_id = ""

        def initialize(self, initialization_input: InitializationInput) -> None:
            self.shard_id = initialization_input.shard_id

        def process_records(self, process_records_input: ProcessRecordsInput) -> None:
            progress.add(len(process_records_input.records), self.shard_id)
            process_records_input.checkpointer.checkpoint()

    consumer = ConsumerConfig(idle_time_between_reads_ms=spec.get("idle_ms", 1_500))
    extra: dict[str, Any] = {}
    if spec.get("max_consumer_threads") is not None:
        extra["max_consumer_threads"] = spec["max_consumer_threads"]
    config = WorkerConfig(
        "bench-app", spec["stream"], initial_position=InitialPosition.trim_horizon(), consumer=consumer, **extra
    )
    store = SQLiteLeaseStore(Path(spec["db"]), "bench-app")  # a fresh file per run: no lease yet
    worker = Worker(config, store=store, source=_kinesis_stream(spec), processor_factory=CountingProcessor)
    threading.Thread(target=worker.run, name="bench-worker", daemon=True).start()
    _wait(spec, progress)
    _report(spec, progress)  # then os._exit: a graceful shutdown is not what is measured


def _wait(spec: dict[str, Any], progress: Progress) -> None:
    if progress.window_s is None:
        progress.done.wait(spec.get("timeout_s", 600))
        return
    # Windowed run: wait for every shard to deliver, then warm up, then measure one window.
    deadline = time.monotonic() + spec.get("timeout_s", 600)
    shards = spec["shards"]
    while len(progress.shards_seen) < shards and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(progress.warmup_s)
    with progress.lock:
        progress.window_start = (time.time(), cpu_s(), progress.count)  # type: ignore[attr-defined]
    time.sleep(progress.window_s)
    progress.done.set()


def _report(spec: dict[str, Any], progress: Progress) -> None:
    end = (time.time(), cpu_s(), progress.count)
    result: dict[str, Any] = {
        "ok": progress.first is not None and (progress.target is None or progress.count >= progress.target),
        "end_wall": end[0],
        "end_cpu_s": end[1],
        "records": end[2],
        "batches": progress.batches,
        "first_wall": None if progress.first is None else progress.first[0],
        "first_cpu_s": None if progress.first is None else progress.first[1],
        "first_batch": None if progress.first is None else progress.first[2],
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    window = getattr(progress, "window_start", None)
    if window is not None:
        result.update(
            window_wall=end[0] - window[0], window_cpu_s=end[1] - window[1], window_records=end[2] - window[2]
        )
    print(json.dumps(result), flush=True)


def _empty_calls(spec: dict[str, Any]) -> None:
    """``spec["calls"]`` GetRecords on a caught-up iterator (LATEST of an idle shard), one thread: the CPU of one
    empty call (``time.thread_time``), then the same loop under cProfile (its top functions by own time)."""
    import cProfile
    import io
    import pstats

    if spec["client"] == "raw-boto3":
        import boto3

        client = boto3.client("kinesis", endpoint_url=spec["endpoint_url"], region_name="us-east-1")
        shard = client.list_shards(StreamName=spec["stream"])["Shards"][0]["ShardId"]
        iterator = client.get_shard_iterator(StreamName=spec["stream"], ShardId=shard, ShardIteratorType="LATEST")

        def call(current: str) -> str:
            return str(client.get_records(ShardIterator=current, Limit=10_000)["NextShardIterator"])

        current = str(iterator["ShardIterator"])
    else:
        from shardwise.retrieval.model import StartingPosition

        source = _kinesis_stream(spec)
        current = source.get_shard_iterator(source.list_shards()[0].shard_id, StartingPosition.latest())

        def call(current: str) -> str:
            return str(source.get_records(current, limit=10_000).next_iterator)

    for _ in range(5):
        current = call(current)
    cpu0 = time.thread_time()
    for _ in range(spec["calls"]):
        current = call(current)
    per_call_ms = (time.thread_time() - cpu0) * 1000 / spec["calls"]
    profiler = cProfile.Profile(time.thread_time)  # CPU time: waiting on the socket is not cost
    profiler.enable()
    for _ in range(spec["calls"]):
        current = call(current)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in table.values())  # own times add up to the whole loop
    rows = []
    for (path, line, func), row in table.items():
        share = 100 * row[3] / total
        if share < 90:  # the loop's own frames (the call, get_records) would top the list at ~100 %
            rows.append([f"{func} ({Path(path).name}:{line})", share, 100 * row[2] / total])
    rows.sort(key=lambda found: -found[1])
    top = rows[:14]
    print(json.dumps({"ok": True, "cpu_ms_per_call": per_call_ms, "top": top}), flush=True)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("cpu") is not None:
        os.sched_setaffinity(0, {spec["cpu"]})
    progress = Progress(spec)
    mode = spec["mode"]
    if mode == "empty-calls":
        _empty_calls(spec)
    elif mode == "worker":
        _worker(spec, progress)
    else:
        runner = threading.Thread(
            target=_bare_boto3 if mode == "bare-boto3" else _bare_stream, args=(spec, progress), daemon=True
        )
        runner.start()
        _wait(spec, progress)
        _report(spec, progress)
    sys.stdout.flush()
    os._exit(0)  # do not wait for reader threads blocked in a call


if __name__ == "__main__":
    main()
