"""Concurrent ``shardwise features`` updates from separate processes against one fleet record (SQLite).

50 CLI processes, each an ``upgrade`` or a ``downgrade`` that conflicts with the others, are all started and
held at a start gate (their imports done) before any is waited on; the gate then opens for all of them at
once. Every change is a conditional write on the epoch it read (``FeatureStore.apply``), so:

* every process exits 0 (its update was written) or 1 with a clear message: a validation failure (in Kafka's
  words, "Invalid update version ...") or the lost race ("the finalized features changed while this update
  was being validated");
* each epoch 1..N was won by exactly one process: the successful processes' ``epoch_after`` are exactly
  1..N, the history holds one entry per epoch, written by that process, and replaying the history from the
  starting levels gives the final levels (each change starts from the level the previous one left);
* ``Migration3.0`` ends at the client version that means the final levels.

A successful update that changes nothing still bumps the epoch and writes a (change-less) history entry, so
every exit-0 process accounts for one epoch.

SQLite only: moto's server does not make concurrent conditional writes atomic (under load both of two racing
conditional writes on one item were seen to succeed; see ``atomic_app`` in tests/unit/admin/test_migrate.py),
so DynamoDB's guarantee cannot be tested against it. The conditions themselves run on moto in the unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shardwise.backends import open_coordinator_tables
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.versions.feature_store import FEATURES_KEY
from shardwise.versions.features import LEASE_ASSIGNMENT, LEASE_DISCOVERY, levels_from_client_version
from shardwise.versions.migration_state import ClientVersion, MigrationStore

APPLICATION = "features-race-app"
PROCESSES = 50
#: The conflicting requests, assigned round-robin.
REQUESTS: tuple[tuple[str, ...], ...] = (
    ("upgrade", "--feature", f"{LEASE_DISCOVERY}=2"),
    ("downgrade", "--feature", f"{LEASE_DISCOVERY}=1"),
    ("upgrade", "--feature", f"{LEASE_ASSIGNMENT}=2", "--feature", f"{LEASE_DISCOVERY}=2"),
    ("downgrade", "--feature", f"{LEASE_ASSIGNMENT}=1"),
)
VALIDATION_FAILURE = "Invalid update version"
LOST_RACE = "the finalized features changed while this update was being validated"
#: Runs the CLI once the gate file exists, so every process writes at about the same moment (the imports, most
#: of a process's start-up time, are done before the gate).
GATED_CLI = """
import os, sys, time
import shardwise.backends, shardwise.backends.sqlite.backend, shardwise.backends.sqlite.items
from shardwise.cli.main import cli
gate = sys.argv[1]
deadline = time.monotonic() + 120
while not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.005)
cli(args=sys.argv[2:], prog_name="shardwise")
"""


def _describe(db: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "shardwise", "features", "describe", "--app", APPLICATION, "--db", str(db), "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_concurrent_conflicting_updates_win_one_epoch_each(tmp_path: Path) -> None:
    db = tmp_path / "shardwise.db"
    store = SQLiteLeaseStore(db, APPLICATION)
    try:
        store.create_table_if_not_exists()
        migration = MigrationStore(open_coordinator_tables(store, APPLICATION).coordinator)
        assert migration.create(ClientVersion.V2X, "test") is not None
    finally:
        store.close()
    start = _describe(db)
    assert start["epoch"] is None
    levels = {feature["feature"]: feature["finalized_version_level"] for feature in start["features"]}
    assert levels == {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 1, "table.layout": 2, "state.format": 0}

    gate = tmp_path / "go"
    processes: list[tuple[tuple[str, ...], subprocess.Popen[str]]] = []
    started = time.monotonic()
    try:
        for index in range(PROCESSES):
            request = REQUESTS[index % len(REQUESTS)]
            command = [sys.executable, "-c", GATED_CLI, str(gate), "features", *request]
            command += ["--app", APPLICATION, "--db", str(db), "--json"]
            processes.append(
                (
                    request,
                    subprocess.Popen(
                        command,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        stdin=subprocess.DEVNULL,
                        text=True,
                    ),
                )
            )
        time.sleep(1.0)  # let the last ones finish their imports
        gate.touch()
        outputs: list[tuple[tuple[str, ...], int, int, str, str]] = []
        for request, process in processes:
            stdout, stderr = process.communicate(timeout=150)
            outputs.append((request, process.pid, process.returncode, stdout, stderr))
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    print(f"{PROCESSES} processes done in {time.monotonic() - started:.1f}s")

    # Every process: exit 0 with its update written, or 1 with a clear reason.
    won: dict[int, int] = {}  # epoch -> pid
    failures = {"validation": 0, "lost race": 0}
    for request, pid, code, stdout, stderr in outputs:
        shown = f"{' '.join(request)} (pid {pid}) exited {code}\nstdout: {stdout}\nstderr: {stderr}"
        assert code in (0, 1), shown
        result = json.loads(stdout)
        if code == 0:
            assert result["ok"], shown
            assert all(line.startswith("Warning: ") for line in stderr.splitlines()), shown
            epoch = result["epoch_after"]
            assert isinstance(epoch, int), shown
            assert epoch == (result["epoch_before"] or 0) + 1, shown
            assert epoch not in won, f"epoch {epoch} won twice (pids {won[epoch]} and {pid})\n{shown}"
            won[epoch] = pid
            assert all(outcome["ok"] for outcome in result["outcomes"]), shown
            assert all(" was " in outcome["message"] for outcome in result["outcomes"]), shown
        else:
            assert not result["ok"], shown
            error = result["error"] or ""
            assert error.startswith("The update failed for all features since the following feature had an error: ")
            if LOST_RACE in error:
                failures["lost race"] += 1
            else:
                assert VALIDATION_FAILURE in error, shown
                failures["validation"] += 1
            count = len(result["outcomes"])
            assert stderr.strip().splitlines()[-1] == f"{count} out of {count} operation(s) failed.", shown
            assert all(outcome["message"].startswith("Could not ") for outcome in result["outcomes"]), shown
    print(f"{len(won)} updates written, {failures['validation']} refused, {failures['lost race']} lost a race")
    assert won, "no update was written at all"

    # Exactly one winner per epoch 1..N, and one history entry per epoch, each by its winner.
    final = _describe(db)
    final_epoch = final["epoch"]
    assert sorted(won) == list(range(1, final_epoch + 1)), f"epochs won {sorted(won)}, final epoch {final_epoch}"
    history = final["history"]
    assert [entry["epoch"] for entry in history] == list(range(final_epoch, 0, -1)), history
    for entry in history:
        assert entry["modified_by"].endswith(f":{won[entry['epoch']]}"), (entry, won[entry["epoch"]])

    # The history is one chain: each change starts from the level the previous one left.
    replayed = {LEASE_ASSIGNMENT: 1, LEASE_DISCOVERY: 1}
    for entry in reversed(history):
        for name, change in entry["changes"].items():
            assert replayed[name] == change["from"], (entry, replayed)
            replayed[name] = change["to"]
        assert replayed[LEASE_DISCOVERY] >= replayed[LEASE_ASSIGNMENT], f"dependency broken at {entry}"
    levels = {feature["feature"]: feature["finalized_version_level"] for feature in final["features"]}
    assert {name: levels[name] for name in replayed} == replayed, (levels, replayed)

    # Migration3.0 means the final levels.
    store = SQLiteLeaseStore(db, APPLICATION)
    try:
        tables = open_coordinator_tables(store, APPLICATION)
        state = MigrationStore(tables.coordinator).read()
        record = tables.coordinator.get(FEATURES_KEY)
    finally:
        store.close()
    assert state is not None and state.version is not None, state
    assert final["client_version"] == state.client_version
    assert levels_from_client_version(state.version) == replayed, (state, replayed)
    assert record is not None and record.attributes["epoch"] == final_epoch
