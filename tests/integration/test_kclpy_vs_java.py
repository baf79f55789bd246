"""The same amazon-kclpy sample processor, with the same properties file, under the Java MultiLangDaemon (KCL
3.1.3) and under ``shardwise run --kclpy-properties`` (no Java): both consume one stream (as two applications)
and must produce the same records — every record once, with the same shard, sequence number, partition key and
data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.javakcl import JavaWorker, make_interop, require_java_kcl, wait_for
from support.standins import FAKE_AWS_ENV, Server

pytestmark = [pytest.mark.java, pytest.mark.aws, pytest.mark.slow]

SAMPLE_DIR = Path(__file__).parent / "kclpy_sample"
SAMPLE = SAMPLE_DIR / "sample_kclpy_app.py"
OUTPUT_ENV = "KCLPY_SAMPLE_OUTPUT"
CHECKPOINT_SECONDS_ENV = "KCLPY_SAMPLE_CHECKPOINT_SECONDS"
SHARDS = 4
RECORDS = 400


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def java_and_shardwise(
    moto_server: Server, kinesis_local: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[JavaWorker, Path, Path, str]]:
    require_java_kcl("3.1.3")
    scenario = make_interop(
        name="kclpy-sample",
        shards=SHARDS,
        kinesis_endpoint=kinesis_local.endpoint_url,
        dynamodb_endpoint=moto_server.endpoint_url,
        work_dir=tmp_path,
    )
    java_out = tmp_path / "java.tsv"
    monkeypatch.setenv(OUTPUT_ENV, str(java_out))
    monkeypatch.setenv(CHECKPOINT_SECONDS_ENV, "2")
    java = JavaWorker(
        "3.1.3",
        f"{scenario.application}-java",
        scenario.stream,
        scenario.kinesis_endpoint,
        scenario.dynamodb_endpoint,
        "java-sample",
        tmp_path / "java",
        properties={"executableName": f"{sys.executable} {SAMPLE}"},
    )
    scenario.put("sample", 0, RECORDS)
    try:
        yield java, java_out, tmp_path / "shardwise.tsv", scenario.application
    finally:
        java.stop()
        scenario.close()


def test_the_sample_processor_gives_the_same_records_under_java_and_under_shardwise(
    java_and_shardwise: tuple[JavaWorker, Path, Path, str], tmp_path: Path
) -> None:
    java, java_out, shardwise_out, application = java_and_shardwise
    java.start()
    # The properties file the daemon was given, for another application name (and worker id): exactly what a
    # kclpy user has on disk.
    text = java.properties_path.read_text()
    properties = tmp_path / "shardwise-app.properties"
    properties.write_text(
        text.replace(f"applicationName = {application}-java", f"applicationName = {application}-shardwise").replace(
            "workerId = java-sample", "workerId = shardwise-sample"
        )
    )
    assert f"applicationName = {application}-shardwise" in properties.read_text()
    log = (tmp_path / "shardwise.log").open("wb")
    env = {**os.environ, **FAKE_AWS_ENV, OUTPUT_ENV: str(shardwise_out), "AWS_EC2_METADATA_DISABLED": "true"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardwise",
            "run",
            "--kclpy-properties",
            str(properties),
            "--processor",
            "sample_kclpy_app:RecordProcessor",
        ],
        cwd=SAMPLE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def both_done() -> bool:
            return len(_lines(java_out)) >= RECORDS and len(_lines(shardwise_out)) >= RECORDS

        wait_for(
            both_done,
            240,
            lambda: (
                f"{RECORDS} records from both: java {len(_lines(java_out))}, shardwise {len(_lines(shardwise_out))}\n"
                + (tmp_path / "shardwise.log").read_text()[-3000:]
            ),
            workers=[java],
        )
        assert worker.poll() is None, (tmp_path / "shardwise.log").read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(40)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    java_lines, shardwise_lines = _lines(java_out), _lines(shardwise_out)
    assert len(java_lines) == len(set(java_lines)) == RECORDS, "Java delivered a record twice"
    assert len(shardwise_lines) == len(set(shardwise_lines)) == RECORDS, "shardwise delivered a record twice"
    assert sorted(shardwise_lines) == sorted(java_lines)
    assert worker.returncode == 0, (tmp_path / "shardwise.log").read_text()[-3000:]
    ignored = (tmp_path / "shardwise.log").read_text()
    assert "executableName" in ignored  # reported as a Java-daemon-only key, not silently dropped
