"""Item conformance with the real Java KCL 3.1.3, both ways (DynamoDB on moto, Kinesis on kinesis-local).

The Java side is the MultiLangDaemon of the ``kclpy-ext`` wheel (``support.javakcl``), running a processor that
logs every record it is given and checkpoints after every batch. Records carry unique ids, so every loss and
every duplicate is counted exactly.

1. :func:`test_shardwise_reads_and_resumes_a_table_java_wrote`: Java KCL 3.1.3 (``CLIENT_VERSION_CONFIG_3X``)
   consumes the first records of a 6-shard stream and checkpoints; ``shardwise leases --json`` shows every lease
   with Java's owner and checkpoints, the legacy layout, Java's ``Leader`` lock and its ``WorkerMetricStats``
   entry; ``shardwise migrate status`` reads Java's ``Migration3.0`` item (``CLIENT_VERSION_3X``, history from
   ``CLIENT_VERSION_INIT``). Java stops; a shardwise 3.x worker resumes from Java's checkpoints: it processes
   exactly the records put after Java stopped, each once.
2. :func:`test_migrate_cli_on_an_application_java_runs_compatible_with_2x`: a Java worker started with
   ``clientVersionConfig = CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X`` (``UPGRADE_FROM_2X``, GSI and
   ``WorkerMetricStats`` created); ``shardwise migrate rollback`` (Java still running) writes
   ``CLIENT_VERSION_2X``, Java follows it (it stops reporting worker metrics), and the GSI and the worker
   metrics table are deleted; ``shardwise migrate rollforward`` writes ``UPGRADE_FROM_2X`` and Java follows
   again, re-creating the GSI and the worker metrics table. Java keeps consuming throughout.
3. :func:`test_java_resumes_a_table_shardwise_wrote`: shardwise 3.x workers (legacy layout) consume the first
   records and checkpoint, then stop; Java KCL 3.1.3 accepts their lease, coordinator and worker-metrics items
   and resumes from their checkpoints: its record log holds exactly the records put after shardwise stopped,
   each once, and its log shows no failure to read an item.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.javakcl import JAVA_FAST, SHARDWISE_3X, Delivery, Interop, JavaWorker, interop_on, require_java_kcl
from support.standins import Server

pytestmark = [pytest.mark.java, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(600)]

SHARDS = 6
GSI = "LeaseOwnerToLeaseKeyIndex"


@pytest.fixture
def make_scenario(moto_server: Server, kinesis_local: Server, tmp_path: Path) -> Iterator[Callable[[str], Interop]]:
    require_java_kcl("3.1.3")
    made: list[Interop] = []

    def make(name: str) -> Interop:
        scenario = interop_on(
            moto_server, kinesis_local, tmp_path, name=name, shards=SHARDS, shardwise_args=SHARDWISE_3X
        )
        made.append(scenario)
        return scenario

    try:
        yield make
    finally:
        for scenario in made:  # no worker of either kind may outlive its test
            scenario.close()


def _last_per_shard(deliveries: list[Delivery]) -> dict[str, int]:
    last: dict[str, int] = {}
    for d in deliveries:
        last[d.shard_id] = max(last.get(d.shard_id, 0), d.sequence_number)
    return last


def _checkpoints(scenario: Interop) -> dict[str, str]:
    return {lease.lease_key: lease.checkpoint.sequence_number for lease in scenario.leases()}


def _checkpointed_all(scenario: Interop, deliveries: list[Delivery]) -> bool:
    """Every lease's checkpoint is the last record delivered on its shard (records or not, every shard has a
    lease)."""
    checkpoints = _checkpoints(scenario)
    if len(checkpoints) != SHARDS:
        return False
    return all(checkpoints.get(shard) == str(seq) for shard, seq in _last_per_shard(deliveries).items())


def _exactly_once(deliveries: list[Delivery], expected: set[str], who: str) -> None:
    counts = Counter(d.record_id for d in deliveries)
    again = sorted(rid for rid, n in counts.items() if n > 1)
    unknown = sorted(set(counts) - expected)
    missing = sorted(expected - set(counts))
    assert not unknown, f"{who} processed {len(unknown)} record(s) it should not have (reprocessed): {unknown[:8]}"
    assert not missing, f"{who} lost {len(missing)} record(s): {missing[:8]}"
    assert not again, f"{who} processed {len(again)} record(s) more than once: {again[:8]}"


def _no_parse_failures(worker: JavaWorker) -> None:
    failures = worker.parse_failures()
    assert not failures, f"Java KCL {worker.worker_id} could not read items:\n" + "\n".join(failures[:20])


# -- 1. Java writes, shardwise reads and resumes ------------------------------------------------------------------


def test_shardwise_reads_and_resumes_a_table_java_wrote(make_scenario: Callable[[str], Interop]) -> None:
    s = make_scenario("javafirst")
    before = set(s.put("java", 0, 240))
    java = s.start_java("java-1", JAVA_FAST)

    s.wait_for(lambda: not s.missing(s.java_deliveries()), 180, lambda: f"Java to process {len(before)} records")
    s.wait_for(
        lambda: _checkpointed_all(s, s.java_deliveries()),
        60,
        lambda: f"Java's checkpoints at its last records; leases: {_checkpoints(s)}",
    )

    # While Java runs: its lock, its metrics entry, the legacy layout, its leases — as shardwise reads them.
    def java_leads() -> dict[str, Any] | None:
        view = s.leases_json()
        return view if view["leader"] == "java-1" and view["workers"] else None

    view = s.wait_for(java_leads, 30, "shardwise leases to show Java's leader lock and worker metrics")
    assert view["layout"] == "legacy"
    assert view["coordinatorTable"] == f"{s.application}-CoordinatorState"
    assert view["workerMetricsTable"] == f"{s.application}-WorkerMetricStats"
    assert [(w["workerId"], w["status"], w["leader"]) for w in view["workers"]] == [("java-1", "active", True)]
    assert view["leasesPerOwner"] == {"java-1": SHARDS}
    status_code, status = s.migrate("status")
    assert status_code == 0, status
    assert status["layout"] == "legacy"
    assert status["migrationStateTable"] == f"{s.application}-CoordinatorState"
    assert status["clientVersion"] == "CLIENT_VERSION_3X"
    assert status["modifiedBy"] == "java-1"
    assert [entry["cv"] for entry in status["history"]] == ["CLIENT_VERSION_INIT"]
    assert status["ownerIndex"]["status"] == "ACTIVE"

    java.stop()
    _no_parse_failures(java)
    _exactly_once(s.java_deliveries(), before, "Java")
    last = _last_per_shard(s.java_deliveries())
    view = s.leases_json()
    rows = {row["leaseKey"]: row for row in view["leases"]}
    assert sorted(rows) == sorted(s.admin.list_shards()[i].shard_id for i in range(SHARDS))
    for shard_id, row in rows.items():
        assert row["checkpoint"] == str(last[shard_id]), f"{shard_id}: {row}"
        assert row["checkpointSubSequenceNumber"] == 0
        assert row["leaseOwner"] in (None, "java-1")
        assert row["pendingCheckpoint"] is None
        assert row["parentShardIds"] == [] and row["childShardIds"] == []
        assert isinstance(row["throughputKBps"], float), row
    assert view["leader"] is None, "Java releases its leader lock on a graceful shutdown"

    # shardwise resumes from Java's checkpoints: only what was put after Java stopped, each record once.
    after = set(s.put("shardwise", 0, 180))
    s.fleet.start("sw-1")
    s.wait_for(
        lambda: not s.missing(),
        120,
        lambda: f"shardwise to process {len(after)} new records; missing {len(s.missing())}",
    )
    time.sleep(3)  # anything processed twice would show up by now
    s.fleet.terminate("sw-1")
    _exactly_once(s.shardwise_deliveries(), after, "shardwise")
    view = s.leases_json()
    assert view["leasesPerOwner"] in ({"sw-1": SHARDS}, {"(unassigned)": SHARDS})
    shardwise_last = _last_per_shard(s.shardwise_deliveries())
    assert {row["leaseKey"]: row["checkpoint"] for row in view["leases"]} == {
        shard: str(shardwise_last.get(shard, last[shard])) for shard in rows
    }


# -- 2. migrate rollback / rollforward on an application Java runs ----------------------------------------------


def test_migrate_cli_on_an_application_java_runs_compatible_with_2x(
    make_scenario: Callable[[str], Interop],
) -> None:
    s = make_scenario("javamig")
    s.put("a", 0, 120)
    java = s.start_java("java-1", JAVA_FAST, clientVersionConfig="CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X")
    s.wait_for(lambda: not s.missing(), 180, "Java (compatible with 2.x) to process the first records")
    metrics_table = f"{s.application}-WorkerMetricStats"
    s.wait_for(
        lambda: metrics_table in s.tables() and GSI in s.owner_index_names(),
        60,
        "Java (UPGRADE_FROM_2X) to create the GSI and the worker metrics table",
    )

    code, status = s.migrate("status")
    assert code == 0, status
    assert (status["layout"], status["clientVersion"]) == ("legacy", "CLIENT_VERSION_UPGRADE_FROM_2X")
    assert [entry["cv"] for entry in status["history"]] == ["CLIENT_VERSION_INIT"]
    reporting = s.wait_for(
        lambda: [w for w in s.migrate("status")[1]["workers"] if w["workerId"] == "java-1" and w["reportsMetrics"]],
        30,
        "Java's worker metrics entry in migrate status",
    )
    assert reporting[0]["leases"] == SHARDS

    # Rollback with Java running: shardwise writes CLIENT_VERSION_2X and waits until Java stops reporting
    # worker metrics (it polls the item every 60 s), then deletes the GSI and the worker metrics table.
    started = time.monotonic()
    code, rollback = s.migrate("rollback", "--poll-interval", "2", "--wait-timeout", "240", "--gsi-timeout", "60")
    print(f"rollback took {time.monotonic() - started:.0f} s")
    assert code == 0, rollback
    assert (rollback["outcome"], rollback["previousClientVersion"], rollback["clientVersion"]) == (
        "rolled-back",
        "CLIENT_VERSION_UPGRADE_FROM_2X",
        "CLIENT_VERSION_2X",
    )
    assert rollback["cleanup"]["wait"] == "done"
    assert rollback["cleanup"]["ownerIndex"] == "deleted"
    assert rollback["cleanup"]["workerMetricsTable"] == "deleted"
    assert GSI not in s.owner_index_names()
    assert metrics_table not in s.tables()
    assert "CLIENT_VERSION_2X" in java.log_text()
    code, status = s.migrate("status")
    assert (status["clientVersion"], status["modifiedBy"]) == ("CLIENT_VERSION_2X", "KclMigrationTool-rollback")
    assert [entry["cv"] for entry in status["history"]] == ["CLIENT_VERSION_UPGRADE_FROM_2X", "CLIENT_VERSION_INIT"]

    # Java keeps consuming in 2.x compatible mode.
    s.put("b", 0, 60)
    s.wait_for(lambda: not s.missing(), 60, "Java (rolled back) to process more records")

    # Rollforward: UPGRADE_FROM_2X again; Java follows and re-creates what the rollback deleted.
    code, rollforward = s.migrate("rollforward")
    assert code == 0, rollforward
    assert (rollforward["outcome"], rollforward["clientVersion"]) == (
        "rolled-forward",
        "CLIENT_VERSION_UPGRADE_FROM_2X",
    )
    s.wait_for(
        lambda: metrics_table in s.tables() and GSI in s.owner_index_names(),
        120,
        "Java (rolled forward) to re-create the GSI and the worker metrics table",
    )
    code, status = s.migrate("status")
    assert (status["clientVersion"], status["modifiedBy"]) == (
        "CLIENT_VERSION_UPGRADE_FROM_2X",
        "KclMigrationTool-rollforward",
    )
    s.put("c", 0, 60)
    s.wait_for(lambda: not s.missing(), 60, "Java (rolled forward) to process more records")
    java.stop()
    _no_parse_failures(java)
    _exactly_once(s.java_deliveries(), set(s.produced_now()), "Java")


# -- 3. shardwise writes, Java reads and resumes ------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["assignment", "client-version-config"])
def test_java_resumes_a_table_shardwise_wrote(make_scenario: Callable[[str], Interop], generation: str) -> None:
    """``generation``: shardwise on the 3.x generation by ``--assignment utilization-3x`` (no ``Migration3.0``
    item), or by ``--client-version-config 3x`` (shardwise writes ``Migration3.0 = CLIENT_VERSION_3X``, which
    Java then reads)."""
    s = make_scenario("swfirst")
    before = set(s.put("shardwise", 0, 240))
    extra = ["--client-version-config", "3x"] if generation == "client-version-config" else []
    s.fleet.start("sw-1", extra)
    s.fleet.start("sw-2", extra)
    s.wait_for(lambda: not s.missing(), 120, lambda: f"shardwise to process {len(before)} records")
    s.wait_for(
        lambda: _checkpointed_all(s, s.shardwise_deliveries()),
        30,
        lambda: f"shardwise's checkpoints at its last records; leases: {_checkpoints(s)}",
    )

    def both_report() -> dict[str, Any] | None:
        view = s.leases_json()
        return view if {w["workerId"] for w in view["workers"]} == {"sw-1", "sw-2"} else None

    view = s.wait_for(both_report, 30, "both shardwise workers' metrics entries")
    assert view["layout"] == "legacy"
    assert view["leader"] in ("sw-1", "sw-2")
    assert set(s.tables()) == {s.application, f"{s.application}-CoordinatorState", f"{s.application}-WorkerMetricStats"}
    code, status = s.migrate("status")
    assert code == 0, status
    if generation == "client-version-config":
        # Written by whichever worker initialized first (not necessarily the one that won the leader lock).
        assert status["clientVersion"] == "CLIENT_VERSION_3X"
        assert status["modifiedBy"] in ("sw-1", "sw-2")
    else:
        assert not status["migrationItemExists"]
    assert s.fleet.terminate("sw-1") == 0
    assert s.fleet.terminate("sw-2") == 0
    _exactly_once(s.shardwise_deliveries(), before, "shardwise")
    checkpoints = _checkpoints(s)
    assert checkpoints == {shard: str(seq) for shard, seq in _last_per_shard(s.shardwise_deliveries()).items()}

    # Java accepts shardwise's items and resumes from its checkpoints.
    after = set(s.put("java", 0, 180))
    java = s.start_java("java-1", JAVA_FAST)
    s.wait_for(
        lambda: not s.missing(),
        180,
        lambda: f"Java to process {len(after)} new records; missing {len(s.missing())}",
    )
    time.sleep(3)  # anything processed twice would show up by now
    first_seen = {e.shard_id: e.detail for e in reversed(java.events()) if e.event == "initialize"}
    assert first_seen == checkpoints, "Java's processors must start at shardwise's checkpoints"
    java.stop()
    _exactly_once(s.java_deliveries(), after, "Java")
    _no_parse_failures(java)
    log = java.log_text()
    assert "Successfully transitioned to CLIENT_VERSION_3X" in log
    if generation == "client-version-config":
        assert "No Migration state available in DDB" not in log, "Java must read shardwise's Migration3.0 item"
