"""The fault scenarios (issue 13): three ``shardwise run`` workers on the stand-ins, each behind its own fault
proxies, a producer putting one record per shard every 250 ms, and the ledger of every delivery.

For each: records lost (asserted 0), duplicates, the longest time two workers processed the same shard (asserted
≤ the failover time where KCL's bound applies: a partitioned worker, a paused lease store, a killed leader,
clock jumps), and the time to recover after the fault ends. Each writes its figures to
``$SHARDWISE_FAULTS_RESULTS`` (``tests/faults/report.py`` renders ``docs/reliability.md``).

Knobs: ``SHARDWISE_FAULTS_FAILOVER_MS`` (default 4000), ``SHARDWISE_FAULTS_FLAKY_S`` (how long the throttling
and 5xx scenario lasts, default 180).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import boto3
import pytest
from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

from faults.harness import (
    FaultFleet,
    Figures,
    LedgerProducer,
    StandIns,
    base_worker_args,
    fault_fleet,
    measure,
    results_dir,
    taker_interval_s,
)
from faults.ledger_processor import CHECKPOINT_MS_ENV, FAKETIME_SHIM_ENV, SLOW_FLAG_ENV, SLOW_MS_ENV
from support.faultproxy import Faults

pytestmark = [pytest.mark.slow, pytest.mark.aws]

FAILOVER_MS = int(os.environ.get("SHARDWISE_FAULTS_FAILOVER_MS", "4000"))
FAILOVER_S = FAILOVER_MS / 1000
TAKER_S = taker_interval_s(FAILOVER_MS)
FLAKY_S = float(os.environ.get("SHARDWISE_FAULTS_FLAKY_S", "180"))
WORKERS = ("w1", "w2", "w3")
SHARDS = 6
TICK_S = 0.25
SPREAD_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 120.0
#: How often the processors checkpoint: periodically, as applications do (KCL samples: every 60 s), not every batch.
CHECKPOINT_MS = int(os.environ.get("SHARDWISE_FAULTS_CHECKPOINT_MS", str(15 * FAILOVER_MS)))
FAKETIME_LIB = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("libfaketime.so.1"))


@dataclass
class Run:
    """A scenario under way: the fleet, its producer, and the shard ids."""

    fleet: FaultFleet
    producer: LedgerProducer
    shards: list[str]

    def steady(self) -> dict[str, str | None]:
        """Wait until the leases are spread over the three workers and every shard is delivering."""
        owners = self.fleet.wait_spread(WORKERS, SHARDS, SPREAD_TIMEOUT_S)
        self.fleet.wait_delivering(time.monotonic(), self.shards, 60)
        return owners

    def finish(self, *, settle_s: float = 3.0) -> None:
        """Let the fleet run ``settle_s`` more seconds, stop the producer and wait until every record put has
        been delivered (a record never delivered fails the test here, with the ledger's view)."""
        time.sleep(settle_s)
        self.producer.finish()
        self.fleet.wait_all_delivered(sorted(self.producer.snapshot()), DRAIN_TIMEOUT_S)


@contextlib.contextmanager
def scenario(
    stand_ins: StandIns,
    tmp_path: Path,
    name: str,
    *,
    worker_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    worker_env: dict[str, dict[str, str]] | None = None,
) -> Iterator[Run]:
    with fault_fleet(
        stand_ins,
        tmp_path,
        name=name,
        shards=SHARDS,
        worker_args=[*base_worker_args(FAILOVER_MS), *worker_args],
        env={CHECKPOINT_MS_ENV: str(CHECKPOINT_MS), **(env or {})},
    ) as fleet:
        for worker_id in WORKERS:
            fleet.start(worker_id, (worker_env or {}).get(worker_id))
        producer = LedgerProducer(fleet.admin, TICK_S)
        producer.start()
        try:
            yield Run(fleet, producer, sorted(s.shard_id for s in fleet.admin.list_shards()))
        finally:
            producer.stop.set()


def report(figures: Figures, tmp_path: Path) -> None:
    """Write the figures, print them, and assert what the issue requires: nothing lost, and (where it applies)
    no two workers processing one shard for longer than the failover time."""
    path = figures.write(results_dir(tmp_path))
    print(f"\n{figures.scenario}: {path.read_text()}")
    assert figures.lost == 0, f"{figures.lost} records lost"
    if figures.bound_applies:
        assert figures.bound_held, (
            f"two workers processed the same shard for {figures.longest_overlap_s:.1f} s "
            f"({figures.overlap_detail}), over the failover time {FAILOVER_S:.1f} s"
        )


def _test_name() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]


# -- a. one worker partitioned from the lease store -------------------------------------------------------------


def test_a_worker_partitioned_from_the_lease_store(stand_ins: StandIns, tmp_path: Path) -> None:
    with scenario(stand_ins, tmp_path, "partition") as run:
        owners = run.steady()
        victim = next(owner for owner in owners.values() if owner is not None)
        theirs = sorted(key for key, owner in owners.items() if owner == victim)
        run.fleet.proxies[victim].dynamodb.set(blackhole=True)
        run.fleet.fleet.wait_until(
            lambda: all(run.fleet.owners()[key] not in (None, victim) for key in theirs),
            60,
            lambda: f"the partitioned {victim}'s leases {theirs} taken by the others: {run.fleet.owners()}",
        )
        time.sleep(2 * FAILOVER_S)  # a victim still delivering would now overlap its successors
        run.fleet.proxies[victim].dynamodb.heal()
        healed = time.monotonic()
        run.finish()
        figures = measure(
            run.fleet,
            run.producer,
            scenario="a-partitioned-worker",
            title="one worker's DynamoDB traffic black-holed (the others fine) until its leases moved + 2 × failover",
            failover_ms=FAILOVER_MS,
            fault_end=healed,
            bound_applies=True,
            notes=[f"{victim} partitioned; its leases {', '.join(theirs)}"],
            test=_test_name(),
        )
    report(figures, tmp_path)


# -- b. the lease store paused for twice the failover time --------------------------------------------------------


def test_b_lease_store_paused_for_twice_the_failover_time(stand_ins: StandIns, tmp_path: Path) -> None:
    with scenario(stand_ins, tmp_path, "paused") as run:
        run.steady()
        stand_ins.pause_dynamodb()
        try:
            time.sleep(2 * FAILOVER_S)
        finally:
            stand_ins.resume_dynamodb()
        resumed = time.monotonic()
        run.fleet.wait_delivering(resumed, run.shards, 120)
        run.finish()
        figures = measure(
            run.fleet,
            run.producer,
            scenario="b-lease-store-paused",
            title="the DynamoDB stand-in SIGSTOPped for 2 × failover, then SIGCONTed",
            failover_ms=FAILOVER_MS,
            fault_end=resumed,
            bound_applies=True,
            test=_test_name(),
        )
    report(figures, tmp_path)


# -- c. throttling and 5xx on both services -----------------------------------------------------------------------


@pytest.mark.timeout(FLAKY_S + 240)
def test_c_throttling_and_5xx_on_both_services(stand_ins: StandIns, tmp_path: Path) -> None:
    with scenario(stand_ins, tmp_path, "flaky") as run:
        run.steady()
        run.fleet.set_faults(Faults(throttle_rate=0.10, error_rate=0.05))
        deadline = time.monotonic() + FLAKY_S
        while time.monotonic() < deadline:  # a worker giving up on transient errors fails the test at once
            run.fleet.fleet.wait_until(lambda: True, 1, "the fleet running")
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        run.fleet.heal_all()
        healed = time.monotonic()
        run.finish()
        figures = measure(
            run.fleet,
            run.producer,
            scenario="c-throttling-and-5xx",
            title=f"10 % throttling + 5 % 5xx on every worker's DynamoDB and Kinesis traffic for {FLAKY_S:.0f} s",
            failover_ms=FAILOVER_MS,
            fault_end=healed,
            bound_applies=False,
            test=_test_name(),
        )
    report(figures, tmp_path)


# -- d. the leader killed repeatedly ------------------------------------------------------------------------------

LEADER_LEASE_MS = 6_000
UTILIZATION_ARGS = (
    "--assignment",
    "utilization-3x",
    "--set",
    "coordination.lease_assignment_interval_ms=2000",
    "--set",
    f"coordination.leader_lease_duration_ms={LEADER_LEASE_MS}",
    "--set",
    "coordination.leader_heartbeat_period_ms=1000",
    "--set",
    "worker_metrics.reporter_frequency_ms=1000",
    "--set",
    "worker_metrics.in_memory_capture_frequency_ms=250",
    "--set",
    "worker_metrics.cpu_source=none",
    "--set",
    "coordination.max_lease_discovery_interval_ms=1000",
)
KILLS = 3


def _leader(fleet: FaultFleet) -> str | None:
    from shardwise.backends import open_coordinator_tables
    from shardwise.leadership.lock import LEADER_KEY

    if not fleet.fleet.store.table_exists():
        return None
    record = open_coordinator_tables(fleet.fleet.store, fleet.application).coordinator.get(LEADER_KEY)
    owner = None if record is None else record.attributes.get("ownerName")
    return owner if isinstance(owner, str) else None


def _live_leader(fleet: FaultFleet, other_than: str | None = None) -> str | None:
    """The leader, if it is a running worker of the fleet other than ``other_than``."""
    leader = _leader(fleet)
    if leader is None or leader == other_than or leader not in fleet.fleet.workers:
        return None
    return leader if fleet.fleet.workers[leader].is_alive() else None


def test_d_leader_killed_repeatedly(stand_ins: StandIns, tmp_path: Path) -> None:
    with scenario(stand_ins, tmp_path, "leader", worker_args=UTILIZATION_ARGS) as run:
        run.steady()
        killed: list[str] = []
        last_kill = time.monotonic()
        for _ in range(KILLS):
            leader = run.fleet.fleet.wait_until(partial(_live_leader, run.fleet), 60, "a live leader")
            assert leader is not None
            run.fleet.fleet.kill(leader)
            last_kill = time.monotonic()
            killed.append(leader)
            run.fleet.fleet.wait_until(
                partial(_live_leader, run.fleet, other_than=leader),
                3 * LEADER_LEASE_MS / 1000 + 30,
                f"a new leader after {leader} was killed",
            )
            run.fleet.start(leader)
            run.steady()
        run.finish()
        figures = measure(
            run.fleet,
            run.producer,
            scenario="d-leader-killed",
            title=f"utilization-3x: the leader SIGKILLed {KILLS} times (restarted once a new leader was named)",
            failover_ms=FAILOVER_MS,
            fault_end=last_kill,
            bound_applies=True,
            notes=[f"killed in turn: {', '.join(killed)}"],
            test=_test_name(),
        )
    report(figures, tmp_path)


# -- e. malformed lease items ---------------------------------------------------------------------------------------

#: One malformed attribute per shard: (attribute, a value of the wrong type or outside the range).
CORRUPTIONS: tuple[tuple[str, AttributeValueTypeDef], ...] = (
    ("leaseCounter", {"S": "not-a-number"}),
    ("checkpoint", {"N": "42"}),
    ("ownerSwitchesSinceCheckpoint", {"S": "two"}),
    ("leaseOwner", {"N": "7"}),
    ("checkpointSubSequenceNumber", {"S": "zero"}),
    ("parentShardId", {"S": "shardId-not-a-set"}),
)


def _repair_command_available() -> bool:
    """Whether ``shardwise leases repair --shard ID`` exists (helper B's command; ``--help`` alone proves
    nothing: click answers it before it looks at the arguments)."""
    probe = subprocess.run(
        [sys.executable, "-m", "shardwise", "leases", "repair", "--help"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0 and "--shard" in probe.stdout


def test_e_malformed_lease_items(stand_ins: StandIns, tmp_path: Path) -> None:
    client = boto3.client("dynamodb", endpoint_url=stand_ins.moto.endpoint_url, region_name="us-east-1")
    with scenario(stand_ins, tmp_path, "malformed") as run:
        run.steady()
        table = run.fleet.application
        saved: dict[str, dict[str, AttributeValueTypeDef]] = {}
        for shard_id, (attribute, bad) in zip(run.shards, CORRUPTIONS, strict=False):
            item = client.get_item(TableName=table, Key={"leaseKey": {"S": shard_id}}, ConsistentRead=True)["Item"]
            saved[shard_id] = dict(item)
            client.put_item(TableName=table, Item={**item, attribute: bad})
        broken = time.monotonic()
        time.sleep(2 * TAKER_S + FAILOVER_S)  # long enough for the leases to be taken if they were readable
        notes = [f"{shard}: {attr} = {bad}" for shard, (attr, bad) in zip(run.shards, CORRUPTIONS, strict=False)]
        if _repair_command_available():
            for shard_id in saved:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "shardwise",
                        "leases",
                        "repair",
                        "--app",
                        table,
                        "--shard",
                        shard_id,
                        *run.fleet.backend.worker_args(),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert done.returncode == 0, f"repair of {shard_id} failed: {done.stdout}{done.stderr}"
            notes.append("repaired with `shardwise leases repair --shard ID`")
        else:
            for item in saved.values():
                client.put_item(TableName=table, Item=item)
            notes.append("`shardwise leases repair` not available: the test restored each item as it was")
        repaired = time.monotonic()
        run.fleet.wait_delivering(repaired, run.shards, 120)
        run.finish()
        warned = {w: run.fleet.fleet.log_text(w).lower().count("malformed") for w in WORKERS}
        notes.append("log lines naming a malformed item: " + ", ".join(f"{w} {n}" for w, n in warned.items()))
        figures = measure(
            run.fleet,
            run.producer,
            scenario="e-malformed-items",
            title=f"{len(saved)} lease items given a malformed attribute each for 2 × taker + failover, then repaired",
            failover_ms=FAILOVER_MS,
            fault_end=repaired,
            bound_applies=False,
            notes=[*notes, f"broken for {repaired - broken:.1f} s"],
            test=_test_name(),
        )
    report(figures, tmp_path)


# -- f. a processor slower than the failover time -------------------------------------------------------------------


def test_f_processor_slower_than_the_failover_time(stand_ins: StandIns, tmp_path: Path) -> None:
    flag = tmp_path / "slow.flag"
    slow_ms = int(FAILOVER_MS * 1.5)
    env = {SLOW_FLAG_ENV: str(flag), SLOW_MS_ENV: str(slow_ms)}
    with scenario(stand_ins, tmp_path, "slow", env=env) as run:
        run.steady()
        flag.touch()
        slow_for_s = 4 * FAILOVER_S + 2 * slow_ms / 1000
        time.sleep(slow_for_s)
        flag.unlink()
        fast_again = time.monotonic()
        run.finish()
        figures = measure(
            run.fleet,
            run.producer,
            scenario="f-slow-processor",
            title=f"every batch held {slow_ms} ms (1.5 × failover) before its checkpoint, for {slow_for_s:.0f} s",
            failover_ms=FAILOVER_MS,
            fault_end=fast_again,
            bound_applies=False,
            test=_test_name(),
        )
    report(figures, tmp_path)


# -- g. wall-clock jumps on one worker ------------------------------------------------------------------------------

#: libfaketime offsets written in turn to the worker's timestamp file (CLOCK_MONOTONIC is left alone).
CLOCK_JUMPS = ("+0", "+300", "-300", "+3600", "+0")


@pytest.mark.skipif(
    not FAKETIME_LIB.exists(), reason=f"libfaketime not installed ({FAKETIME_LIB}); scripts/setup installs it"
)
def test_g_wall_clock_jumps_on_one_worker(stand_ins: StandIns, tmp_path: Path) -> None:
    stamp = tmp_path / "faketime.rc"
    stamp.write_text("+0\n")
    faked = {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME_TIMESTAMP_FILE": str(stamp),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
        FAKETIME_SHIM_ENV: "1",  # libfaketime 0.9.10 breaks time.sleep under DONT_FAKE_MONOTONIC: see ledger_processor
    }
    with scenario(stand_ins, tmp_path, "clock", worker_env={"w1": faked}) as run:
        run.steady()
        for offset in CLOCK_JUMPS[1:]:
            stamp.write_text(f"{offset}\n")
            time.sleep(2 * FAILOVER_S)
        restored = time.monotonic()
        run.finish()
        figures = measure(
            run.fleet,
            run.producer,
            scenario="g-wall-clock-jumps",
            title="w1's wall clock jumped +5 min, −5 min, +1 h, back (libfaketime; CLOCK_MONOTONIC untouched), "
            "2 × failover apart",
            failover_ms=FAILOVER_MS,
            fault_end=restored,
            bound_applies=True,
            test=_test_name(),
        )
    report(figures, tmp_path)
