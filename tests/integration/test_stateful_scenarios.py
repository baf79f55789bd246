"""Stateful processing end to end, with real ``shardwise run`` worker processes, on the local backend and on the
AWS stand-ins (DynamoDB on moto, Kinesis on kinesis-local): the counting processor
(``support.counting_processor``, per partition key a count in the shard's state store) must end with every
key's count equal to the records produced for it — exactly, not at least — whatever happened to the workers.
Counts are read through the changelog from the leaf shard holding each key (``shardwise.demo.counting``).

1. :func:`test_counts_stay_exact_through_crashes_takeovers_and_resharding`: 50,000 records on 8 shards over
   200 keys; w1 SIGKILLs itself between the changelog append and the local commit of its 3rd commit (a kill
   inside a commit, by the ``set_commit_observer`` hook) and restarts on the same state directory (its store is
   behind the changelog); w2 SIGKILLs itself between the local commit and the lease checkpoint of its 4th
   commit (the store's position is ahead of the lease checkpoint) and restarts with an **empty** state
   directory (restore from the changelog); w3 is SIGKILLed by the test at random moments and restarted; one
   shard is split and two others merged while records flow.
2. :func:`test_a_stateless_application_becomes_stateful_without_reprocessing`: workers running the stateless
   ``processors:RecordingProcessor`` checkpoint every batch; after they stop, counting workers start on the same
   application: the counts equal the records put *after* the switch (every record before it is behind a lease
   checkpoint and is never delivered to the stateful processor).
3. :func:`test_downgrade_to_sidecar_format_and_back`: a fleet at ``state.format`` 2; ``shardwise features
   downgrade --feature state.format=1``; w1 restarted alone, pinned to release 0.3 (level 1 only), on its own
   state directory holding level-2 stores (it wipes each and restores it from the changelog, one log line per
   store); w2 (level 2 supported, level 1 finalized) joins; ``shardwise features upgrade --feature
   state.format=2`` and both restarted unpinned (level-1 stores upgraded in place). Counts exact after each
   phase.

Timings are shortened: failover 2 s, commit interval 500 ms, parent shards polled every 500 ms.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from integration.processors import RESULTS_ENV, read_processed
from support.counting_processor import KILL_AT_ENV, KILL_MARK_ENV
from support.counting_scenario import (
    COUNTING,
    COUNTING_PYTHONPATH,
    KeyedProducer,
    changelog_of,
    state_dirs,
    wait_exact_counts,
)
from support.fleet import Backend, Fleet, StreamAdmin
from support.scenario import FreshStreams

pytestmark = [pytest.mark.slow]

SHARDS = 8
FAILOVER_MS = 2_000
KEYS = [f"key-{i:03d}" for i in range(200)]
WORKER_ARGS = (
    "--initial-position",
    "TRIM_HORIZON",
    "--failover-time-ms",
    str(FAILOVER_MS),
    "--idle-time-between-reads-ms",
    "100",
    "--max-records",
    "1000",
    "--set",
    "shard_sync_interval_ms=1000",
    "--set",
    "consumer.parent_shard_poll_interval_ms=500",
    "--set",
    "consumer.task_backoff_time_ms=200",
    "--set",
    "state.commit_interval_ms=500",
)


@pytest.fixture
def aws_tick_s() -> float:
    return 0.25


def _open(fresh_streams: FreshStreams, name: str, processor: str = COUNTING) -> tuple[Fleet, StreamAdmin]:
    fleet, admin, _results = fresh_streams.open(name, SHARDS, processor=processor, worker_args=WORKER_ARGS)
    fleet.pythonpath = COUNTING_PYTHONPATH
    return fleet, admin


def _producer(admin: StreamAdmin, backend: Backend, total: int, seconds: float, seed: int = 14) -> KeyedProducer:
    batch = 500 if backend.kind == "local" else 250
    return KeyedProducer(admin, KEYS, total, batch=batch, interval_s=seconds / (total / batch), seed=seed)


def _reshard(admin: StreamAdmin) -> tuple[list[str], str]:
    """Split the first open shard; merge the two lowest adjacent open shards that are not its children."""
    open_shards = sorted((s for s in admin.list_shards() if s.is_open), key=lambda s: s.hash_key_range.start)
    children = admin.split(open_shards[0].shard_id)
    rest = sorted(
        (s for s in admin.list_shards() if s.is_open and s.shard_id not in children),
        key=lambda s: s.hash_key_range.start,
    )
    pair = next((a, b) for a, b in itertools.pairwise(rest) if a.hash_key_range.is_adjacent_to(b.hash_key_range))
    return children, admin.merge(pair[0].shard_id, pair[1].shard_id)


def _wait_file(fleet: Fleet, path: Path, timeout_s: float, what: str) -> str:
    text = fleet.wait_until(lambda: path.exists() and path.read_text(), timeout_s, what)
    assert isinstance(text, str)
    return text


def test_counts_stay_exact_through_crashes_takeovers_and_resharding(
    fresh_streams: FreshStreams, backend: Backend, tmp_path: Path
) -> None:
    fleet, admin = _open(fresh_streams, "crash")
    changelog = changelog_of(backend, fleet.application)
    marks = {w: tmp_path / f"{w}.killed" for w in ("w1", "w2")}
    kills = {"w1": "after-changelog:3", "w2": "after-store:4"}
    for worker_id in ("w1", "w2", "w3"):
        env = {KILL_AT_ENV: kills[worker_id], KILL_MARK_ENV: str(marks[worker_id])} if worker_id in kills else {}
        fleet.start(worker_id, ["--set", state_dirs(tmp_path, worker_id, 1)], env)
        if worker_id in kills:
            fleet.workers[worker_id].stopped = "kills itself"  # its exit is expected, not a failure
    total = 50_000
    producer = _producer(admin, backend, total, 40.0 if backend.kind == "local" else 60.0)
    producer.start()
    try:
        # The kills inside a commit: the worker dies by its own hand, the test restarts it.
        stage = _wait_file(fleet, marks["w1"], 90, "w1 killing itself after the changelog append")
        assert stage.startswith("after-changelog")
        fleet.kill("w1")  # reaps it
        fleet.start("w1", ["--set", state_dirs(tmp_path, "w1", 1)])  # the same store, one commit behind
        stage = _wait_file(fleet, marks["w2"], 90, "w2 killing itself after the local commit")
        assert stage.startswith("after-store")
        fleet.kill("w2")
        fleet.start("w2", ["--set", state_dirs(tmp_path, "w2", 2)])  # an empty state directory: restore
        producer.wait_done(0.4, 120)
        _reshard(admin)
        # Random kills of w3 while records flow (each restart on an empty directory half of the time).
        chance = random.Random(1014)
        for generation in (2, 3):
            time.sleep(chance.uniform(0.5, 4.0))
            fleet.kill("w3")
            fleet.start("w3", ["--set", state_dirs(tmp_path, "w3", generation if chance.random() < 0.5 else 1)])
        producer.finish(timeout_s=180, stop=False)
        expected = producer.produced()
        assert sum(expected.values()) == total
        wait_exact_counts(fleet, admin, changelog, expected, timeout_s=150)
    finally:
        producer.stop.set()


def test_a_stateless_application_becomes_stateful_without_reprocessing(
    fresh_streams: FreshStreams, backend: Backend, tmp_path: Path
) -> None:
    fleet, admin = _open(fresh_streams, "upgrade", processor="processors:RecordingProcessor")
    for worker_id in ("w1", "w2"):
        fleet.start(worker_id)
    before = _producer(admin, backend, 5_000, 5.0, seed=1)
    before.start()
    before.finish(timeout_s=60, stop=False)
    produced_before = before.done
    fleet.wait_until(lambda: _delivered(fleet) >= produced_before, 120, lambda: f"{produced_before} records recorded")
    for worker_id in ("w1", "w2"):
        assert fleet.terminate(worker_id) == 0, fleet.report()  # a graceful stop checkpoints and releases

    fleet.processor = COUNTING
    for worker_id in ("s1", "s2"):
        fleet.start(worker_id, ["--set", state_dirs(tmp_path, worker_id, 1)])
    after = _producer(admin, backend, 5_000, 5.0, seed=2)
    after.start()
    after.finish(timeout_s=60, stop=False)
    expected = after.produced()
    counted = wait_exact_counts(fleet, admin, changelog_of(backend, fleet.application), expected, timeout_s=120)
    assert sum(counted.values()) == 5_000  # none of the records before the switch


def _delivered(fleet: Fleet) -> int:
    return len({row.data for row in read_processed(Path(fleet.env[RESULTS_ENV]))})


def _features(backend: Backend, application: str, *args: str) -> str:
    command = [sys.executable, "-m", "shardwise", "features", *args, "--app", application, *backend.table_cli_args()]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_downgrade_to_sidecar_format_and_back(fresh_streams: FreshStreams, backend: Backend, tmp_path: Path) -> None:
    fleet, admin = _open(fresh_streams, "downgrade")
    changelog = changelog_of(backend, fleet.application)
    w1_state = ["--set", state_dirs(tmp_path, "w1", 1)]
    fleet.start("w1", w1_state)
    fleet.start("w2", ["--set", state_dirs(tmp_path, "w2", 1)])
    expected: Counter[str] = Counter()

    def phase(seed: int) -> None:
        producer = _producer(admin, backend, 4_000, 4.0, seed=seed)
        producer.start()
        producer.finish(timeout_s=60, stop=False)
        expected.update(producer.produced())
        wait_exact_counts(fleet, admin, changelog, dict(expected), timeout_s=120)

    phase(1)
    _features(backend, fleet.application, "upgrade", "--feature", "state.format=2")  # finalized: the fleet at 2
    assert any((tmp_path / "state-w1-1" / fleet.application).iterdir()), "w1 kept no store in phase 1"
    for worker_id in ("w1", "w2"):
        assert fleet.terminate(worker_id) == 0, fleet.report()
    _features(backend, fleet.application, "downgrade", "--feature", "state.format=1")
    # Pinned to level 1 and alone, w1 takes every shard and finds its level-2 stores: it wipes each and
    # restores it from the changelog (one log line each); the others it restores into new level-1 stores.
    fleet.start("w1", [*w1_state, "--set", 'features.release="0.3"'])
    phase(2)
    assert "at state.format 2 (above its 1); wiping it" in fleet.log_text("w1"), fleet.log_tail("w1", 80)
    fleet.start("w2", ["--set", state_dirs(tmp_path, "w2", 1)])
    phase(3)
    for worker_id in ("w1", "w2"):
        assert fleet.terminate(worker_id) == 0, fleet.report()
    _features(backend, fleet.application, "upgrade", "--feature", "state.format=2")
    fleet.start("w1", w1_state)  # its level-1 stores are upgraded in place
    fleet.start("w2", ["--set", state_dirs(tmp_path, "w2", 1)])
    phase(4)
