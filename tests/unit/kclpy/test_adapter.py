"""The kclpy adapter: v3, v2 and v1 processors get amazon-kclpy's inputs; the checkpointer has kclpy's signature
and its errors kclpy's names; the ``amazon_kclpy`` stand-in lets an unmodified processor module import without
amazon-kclpy (and the real package, when installed, wins)."""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.checkpoint.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.errors import (
    ConfigurationError,
    DependencyError,
    InvalidStateError,
    LeaseLostError,
    ResourceNotFoundError,
    ShardwiseError,
    ThrottlingError,
)
from shardwise.kclpy import CheckpointError, KclpyProcessorAdapter, checkpoint_error_class, kclpy_api_version
from shardwise.kclpy.adapter import KclpyCheckpointer, kclpy_factory, to_kclpy_record
from shardwise.kclpy.compat import kcl, messages
from shardwise.kclpy.compat.v2 import processor as v2
from shardwise.kclpy.compat.v3 import processor as v3
from shardwise.processor import (
    BaseRecordProcessor,
    InitializationInput,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
)
from shardwise.retrieval.model import Record
from support.javakcl import JavaKclUnavailable, kcl_install

SRC = Path(__file__).resolve().parents[3] / "src"
SHARD = "shardId-000000000007"
ARRIVAL = datetime(2026, 3, 1, 12, 30, 45, 123000, tzinfo=timezone.utc)
ARRIVAL_MS = 1772368245123


# -- a shardwise checkpointer whose writes can fail ----------------------------------------------------------------


@dataclass
class Writer:
    writes: list[ExtendedSequenceNumber] = field(default_factory=list)
    fail_with: ShardwiseError | None = None

    def write_checkpoint(
        self,
        lease_key: str,
        token: str,
        checkpoint: ExtendedSequenceNumber,
        *,
        pending: ExtendedSequenceNumber | None,
        pending_state: bytes | None,
    ) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.writes.append(checkpoint)


def make_checkpointer(writer: Writer, delivered: int | None = 30) -> Checkpointer:
    checkpointer = Checkpointer(SHARD, "token", writer, last_checkpoint=TRIM_HORIZON)
    if delivered is not None:
        checkpointer.advance(ExtendedSequenceNumber(str(delivered)))
    return checkpointer


def record(seq: int, data: bytes = b"hello", key: str = "pk", sub: int = 0) -> Record:
    return Record(
        data=data,
        partition_key=key,
        sequence_number=str(seq),
        approximate_arrival_timestamp=ARRIVAL,
        sub_sequence_number=sub,
    )


# -- processors of the three APIs that record what they get -----------------------------------------------------


class V3(v3.RecordProcessorBase):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def initialize(self, initialize_input: Any) -> None:
        self.calls.append(("initialize", initialize_input))

    def process_records(self, process_records_input: Any) -> None:
        self.calls.append(("process_records", process_records_input))

    def lease_lost(self, lease_lost_input: Any) -> None:
        self.calls.append(("lease_lost", lease_lost_input))

    def shard_ended(self, shard_ended_input: Any) -> None:
        self.calls.append(("shard_ended", shard_ended_input))
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self.calls.append(("shutdown_requested", shutdown_requested_input))
        shutdown_requested_input.checkpointer.checkpoint()


class V2(v2.RecordProcessorBase):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.checkpoint_errors: list[Exception] = []

    def initialize(self, initialize_input: Any) -> None:
        self.calls.append(("initialize", initialize_input))

    def process_records(self, process_records_input: Any) -> None:
        self.calls.append(("process_records", process_records_input))

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self.calls.append(("shutdown_requested", shutdown_requested_input))

    def shutdown(self, shutdown_input: Any) -> None:
        self.calls.append(("shutdown", shutdown_input))
        try:
            shutdown_input.checkpointer.checkpoint()
        except Exception as exc:
            self.checkpoint_errors.append(exc)


class V1(kcl.RecordProcessorBase):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def initialize(self, shard_id: str) -> None:
        self.calls.append(("initialize", shard_id))

    def process_records(self, records: list[Any], checkpointer: Any) -> None:
        self.calls.append(("process_records", records, checkpointer))
        checkpointer.checkpoint(records[-1]["sequenceNumber"])

    def shutdown(self, checkpointer: Any, reason: str) -> None:
        self.calls.append(("shutdown", checkpointer, reason))

    def shutdown_requested(self, checkpointer: Any) -> None:
        self.calls.append(("shutdown_requested", checkpointer))


def init_input(checkpoint: ExtendedSequenceNumber = TRIM_HORIZON) -> InitializationInput:
    return InitializationInput(shard_id=SHARD, extended_sequence_number=checkpoint)


# -- v3 --------------------------------------------------------------------------------------------------------


def test_v3_processor_gets_kclpy_inputs() -> None:
    processor = V3()
    adapter = KclpyProcessorAdapter(processor)
    assert adapter.api_version == 3
    writer = Writer()
    checkpointer = make_checkpointer(writer)

    adapter.initialize(init_input(ExtendedSequenceNumber("12", 3)))
    adapter.process_records(
        ProcessRecordsInput(
            records=[record(21, b"\x00\xffbin", "key-1", sub=2), record(30)],
            checkpointer=checkpointer,
            millis_behind_latest=1500,
        )
    )
    adapter.shutdown_requested(ShutdownRequestedInput(shard_id=SHARD, checkpointer=checkpointer))
    adapter.lease_lost(LeaseLostInput(shard_id=SHARD))

    names = [name for name, _ in processor.calls]
    assert names == ["initialize", "process_records", "shutdown_requested", "lease_lost"]
    init = processor.calls[0][1]
    assert isinstance(init, messages.InitializeInput)
    assert (init.shard_id, init.sequence_number, init.sub_sequence_number, init.action) == (
        SHARD,
        "12",
        3,
        "initialize",
    )
    batch = processor.calls[1][1]
    assert isinstance(batch, messages.ProcessRecordsInput)
    assert batch.action == "processRecords"
    assert batch.millis_behind_latest == 1500
    assert isinstance(batch.checkpointer, KclpyCheckpointer)
    first, second = batch.records
    assert first.data == base64.b64encode(b"\x00\xffbin").decode()
    assert first.binary_data == b"\x00\xffbin"
    assert (first.partition_key, first.sequence_number, first.sub_sequence_number) == ("key-1", "21", 2)
    assert first.timestamp_millis == ARRIVAL_MS
    # amazon-kclpy: datetime.fromtimestamp(millis / 1000.0), a naive local time
    assert first.approximate_arrival_timestamp == datetime.fromtimestamp(ARRIVAL_MS / 1000.0)
    assert first.approximate_arrival_timestamp.tzinfo is None
    assert first["partitionKey"] == "key-1"
    assert first.get("sequenceNumber") == "21"
    assert first.get("action") == "record"
    assert second.binary_data == b"hello"
    assert processor.calls[2][1].action == "shutdownRequested"
    assert processor.calls[3][1].action == "leaseLost"
    assert writer.writes == [ExtendedSequenceNumber("30")]  # shutdown_requested checkpointed everything delivered


def test_v3_shard_end_checkpoints_shard_end() -> None:
    processor = V3()
    adapter = KclpyProcessorAdapter(processor)
    writer = Writer()
    checkpointer = make_checkpointer(writer)
    checkpointer.advance(SHARD_END)
    adapter.initialize(init_input())
    adapter.shard_ended(ShardEndedInput(shard_id=SHARD, checkpointer=checkpointer))
    ended = processor.calls[-1][1]
    assert isinstance(ended, messages.ShardEndedInput)
    assert ended.action == "shardEnded"
    assert writer.writes == [SHARD_END]


def test_the_same_kclpy_checkpointer_for_one_shardwise_checkpointer() -> None:
    processor = V3()
    adapter = KclpyProcessorAdapter(processor)
    checkpointer = make_checkpointer(Writer())
    for _ in range(2):
        adapter.process_records(ProcessRecordsInput(records=[record(1)], checkpointer=checkpointer))
    assert processor.calls[0][1].checkpointer is processor.calls[1][1].checkpointer


# -- v2 ----------------------------------------------------------------------------------------------------------


def test_v2_processor_gets_shutdown_with_terminate_and_zombie() -> None:
    processor = V2()
    adapter = KclpyProcessorAdapter(processor)
    assert adapter.api_version == 2
    writer = Writer()
    checkpointer = make_checkpointer(writer)
    checkpointer.advance(SHARD_END)

    adapter.initialize(init_input())
    adapter.process_records(ProcessRecordsInput(records=[record(5)], checkpointer=checkpointer, millis_behind_latest=0))
    adapter.shard_ended(ShardEndedInput(shard_id=SHARD, checkpointer=checkpointer))

    names = [name for name, _ in processor.calls]
    assert names == ["initialize", "process_records", "shutdown"]
    assert processor.calls[0][1].sequence_number == "TRIM_HORIZON"
    assert processor.calls[1][1].records[0].sequence_number == "5"
    terminate = processor.calls[2][1]
    assert isinstance(terminate, messages.ShutdownInput)
    assert (terminate.reason, terminate.action) == ("TERMINATE", "shutdown")
    assert isinstance(terminate.checkpointer, KclpyCheckpointer)
    assert writer.writes == [SHARD_END]  # TERMINATE checkpointed

    lost = V2()
    lost_adapter = KclpyProcessorAdapter(lost)
    lost_adapter.initialize(init_input())
    lost_adapter.lease_lost(LeaseLostInput(shard_id=SHARD))
    zombie = lost.calls[-1][1]
    assert zombie.reason == "ZOMBIE"
    (error,) = lost.checkpoint_errors  # a ZOMBIE shutdown cannot checkpoint
    assert isinstance(error, CheckpointError)
    assert error.value == "Checkpointing is not allowed when the lease is lost"


def test_a_requested_shutdown_ends_with_lease_lost_as_in_kcl() -> None:
    v3_processor, v2_processor, v1_processor = V3(), V2(), V1()
    writer = Writer()
    checkpointer = make_checkpointer(writer)
    for processor in (v3_processor, v2_processor, v1_processor):
        adapter = KclpyProcessorAdapter(processor)
        adapter.initialize(init_input())
        adapter.shutdown_requested(ShutdownRequestedInput(shard_id=SHARD, checkpointer=checkpointer))
        adapter.lease_lost(LeaseLostInput(shard_id=SHARD))  # the worker's own, later: not delivered twice
    assert [name for name, _ in v3_processor.calls] == ["initialize", "shutdown_requested", "lease_lost"]
    assert [name for name, _ in v2_processor.calls] == ["initialize", "shutdown_requested", "shutdown"]
    assert v2_processor.calls[-1][1].reason == "ZOMBIE"
    assert [call[0] for call in v1_processor.calls] == ["initialize", "shutdown_requested", "shutdown"]
    assert v1_processor.calls[-1][2] == "ZOMBIE"


def test_a_v2_processor_without_shutdown_requested_is_fine() -> None:
    class Bare:
        version = 2

        def __init__(self) -> None:
            self.calls: list[str] = []

        def initialize(self, initialize_input: Any) -> None:
            self.calls.append("initialize")

        def process_records(self, process_records_input: Any) -> None:
            self.calls.append("process_records")

        def shutdown(self, shutdown_input: Any) -> None:
            self.calls.append(shutdown_input.reason)

    processor = Bare()
    adapter = KclpyProcessorAdapter(processor)
    adapter.shutdown_requested(ShutdownRequestedInput(shard_id=SHARD, checkpointer=make_checkpointer(Writer())))
    assert processor.calls == ["ZOMBIE"]


# -- v1 ----------------------------------------------------------------------------------------------------------


def test_v1_processor_gets_the_original_api() -> None:
    processor = V1()
    adapter = KclpyProcessorAdapter(processor)
    assert adapter.api_version == 1
    writer = Writer()
    checkpointer = make_checkpointer(writer)
    checkpointer.advance(SHARD_END)
    adapter.initialize(init_input())
    adapter.process_records(ProcessRecordsInput(records=[record(4), record(9)], checkpointer=checkpointer))
    adapter.shard_ended(ShardEndedInput(shard_id=SHARD, checkpointer=checkpointer))
    assert processor.calls[0] == ("initialize", SHARD)
    _, records, kclpy_checkpointer = processor.calls[1]
    assert [r["sequenceNumber"] for r in records] == ["4", "9"]
    assert isinstance(kclpy_checkpointer, KclpyCheckpointer)
    assert processor.calls[2] == ("shutdown", kclpy_checkpointer, "TERMINATE")
    assert writer.writes == [ExtendedSequenceNumber("9")]
    adapter.shutdown_requested(ShutdownRequestedInput(shard_id=SHARD, checkpointer=checkpointer))
    assert processor.calls[3] == ("shutdown_requested", kclpy_checkpointer)
    assert processor.calls[4][0::2] == ("shutdown", "ZOMBIE")
    assert isinstance(processor.calls[4][1], messages.LeaseLostCheckpointer)


# -- detection ---------------------------------------------------------------------------------------------------


class DuckV3:
    def initialize(self, i: Any) -> None: ...
    def process_records(self, i: Any) -> None: ...
    def lease_lost(self, i: Any) -> None: ...
    def shard_ended(self, i: Any) -> None: ...
    def shutdown_requested(self, i: Any) -> None: ...


class DuckV2:
    def initialize(self, i: Any) -> None: ...
    def process_records(self, i: Any) -> None: ...
    def shutdown(self, shutdown_input: Any) -> None: ...


class DuckV1:
    def initialize(self, shard_id: str) -> None: ...
    def process_records(self, records: Any, checkpointer: Any) -> None: ...
    def shutdown(self, checkpointer: Any, reason: str) -> None: ...


@pytest.mark.parametrize(
    ("target", "version"),
    [(V3, 3), (V3(), 3), (V2, 2), (V1(), 1), (DuckV3, 3), (DuckV2(), 2), (DuckV2, 2), (DuckV1(), 1), (DuckV1, 1)],
)
def test_api_version_detection(target: object, version: int) -> None:
    assert kclpy_api_version(target) == version


def test_not_a_kclpy_processor() -> None:
    with pytest.raises(ConfigurationError, match="object is not an amazon-kclpy record processor"):
        kclpy_api_version(object())

    class Half:
        version = 3

        def initialize(self, i: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"Half \(amazon-kclpy v3 API\) lacks process_records, lease_lost"):
        kclpy_api_version(Half)


def test_the_factory_checks_a_class_at_once_and_passes_native_processors_through() -> None:
    with pytest.raises(ConfigurationError, match="not an amazon-kclpy record processor"):
        kclpy_factory(dict)

    class Native(BaseRecordProcessor):
        def process_records(self, process_records_input: ProcessRecordsInput) -> None:
            return None

    assert isinstance(kclpy_factory(Native)(), Native)
    made = kclpy_factory(V3)()
    assert isinstance(made, KclpyProcessorAdapter)
    assert isinstance(made.delegate, V3)


# -- errors from the processor -----------------------------------------------------------------------------------


class Raising(V3):
    def process_records(self, process_records_input: Any) -> None:
        super().process_records(process_records_input)
        raise RuntimeError("boom")

    def initialize(self, initialize_input: Any) -> None:
        raise ValueError("bad init")


def test_processor_errors_are_logged_and_swallowed_like_kclpy(caplog: pytest.LogCaptureFixture) -> None:
    adapter = KclpyProcessorAdapter(Raising())
    with caplog.at_level(logging.ERROR, logger="shardwise.kclpy.adapter"):
        adapter.initialize(init_input())
        adapter.process_records(ProcessRecordsInput(records=[record(1)], checkpointer=make_checkpointer(Writer())))
    messages_logged = [r.getMessage() for r in caplog.records]
    assert any("raised in initialize" in m for m in messages_logged)
    assert any("raised in processRecords" in m for m in messages_logged)
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_redeliver_on_error_lets_the_batch_come_again() -> None:
    adapter = KclpyProcessorAdapter(Raising(), redeliver_on_error=True)
    with pytest.raises(RuntimeError, match="boom"):
        adapter.process_records(ProcessRecordsInput(records=[record(1)], checkpointer=make_checkpointer(Writer())))


# -- the checkpointer --------------------------------------------------------------------------------------------


def test_checkpoint_signatures() -> None:
    writer = Writer()
    checkpointer = KclpyCheckpointer(make_checkpointer(writer))
    checkpointer.checkpoint("10")
    checkpointer.checkpoint(12)  # an int, as amazon-kclpy's sample keeps them, reaches the daemon as digits
    checkpointer.checkpoint("12", 4)
    checkpointer.checkpoint(sequence_number="13", sub_sequence_number="2")  # type: ignore[arg-type]
    checkpointer.checkpoint(None, 99)  # no sequence number: the sub-sequence number is ignored, as in the daemon
    assert writer.writes == [
        ExtendedSequenceNumber("10"),
        ExtendedSequenceNumber("12"),
        ExtendedSequenceNumber("12", 4),
        ExtendedSequenceNumber("13", 2),
        ExtendedSequenceNumber("30"),
    ]


@pytest.mark.parametrize(
    ("fail_with", "call", "name"),
    [
        (None, ("31", None), "IllegalArgumentException"),  # beyond what was delivered
        (None, ("not-a-number", None), "IllegalArgumentException"),
        (None, ("10", -1), "IllegalArgumentException"),
        (None, ("10", 1.5), "IllegalArgumentException"),
        (LeaseLostError("gone"), (None, None), "ShutdownException"),
        (ThrottlingError("slow down"), (None, None), "ThrottlingException"),
        (DependencyError("down"), (None, None), "KinesisClientLibDependencyException"),
        (ResourceNotFoundError("no table"), (None, None), "InvalidStateException"),
        (InvalidStateError("not ready"), (None, None), "InvalidStateException"),
    ],
)
def test_checkpoint_errors_have_kclpys_names(
    fail_with: ShardwiseError | None, call: tuple[Any, Any], name: str
) -> None:
    checkpointer = KclpyCheckpointer(make_checkpointer(Writer(fail_with=fail_with)))
    with pytest.raises(CheckpointError) as caught:
        checkpointer.checkpoint(*call)
    assert caught.value.value == name
    assert str(caught.value) == repr(name)  # amazon-kclpy's CheckpointError.__str__


def test_the_sample_style_retry_loop_sees_the_names() -> None:
    writer = Writer(fail_with=ThrottlingError("slow down"))
    checkpointer = KclpyCheckpointer(make_checkpointer(writer))
    seen = []
    for _ in range(3):
        try:
            checkpointer.checkpoint()
            break
        except kcl.CheckpointError as error:  # what amazon-kclpy's sample catches
            seen.append(error.value)
            if len(seen) == 2:
                writer.fail_with = None
    assert seen == ["ThrottlingException", "ThrottlingException"]
    assert writer.writes == [ExtendedSequenceNumber("30")]


def test_without_amazon_kclpy_the_error_class_is_shardwises() -> None:
    assert "amazon_kclpy" not in sys.modules or sys.modules["amazon_kclpy"].__name__ == "shardwise.kclpy.compat"
    assert checkpoint_error_class() is CheckpointError
    assert kcl.CheckpointError is CheckpointError
    assert issubclass(CheckpointError, ShardwiseError)


def test_kclprocess_run_tells_how_to_run_the_processor() -> None:
    with pytest.raises(
        ConfigurationError, match=re.escape("shardwise run --kclpy-properties app.properties --processor MODULE:V3")
    ):
        kcl.KCLProcess(V3()).run()


def test_record_round_trip_from_a_shardwise_record() -> None:
    kclpy_record = to_kclpy_record(record(7, b"\n\t", "k", sub=1))
    wire = messages.Record(
        {
            "action": "record",
            "data": kclpy_record.data,
            "partitionKey": "k",
            "sequenceNumber": "7",
            "subSequenceNumber": 1,
            "approximateArrivalTimestamp": ARRIVAL_MS,
        }
    )
    for attribute in (
        "data",
        "binary_data",
        "partition_key",
        "sequence_number",
        "sub_sequence_number",
        "timestamp_millis",
        "approximate_arrival_timestamp",
    ):
        assert getattr(wire, attribute) == getattr(kclpy_record, attribute), attribute


# -- the amazon_kclpy stand-in (in a fresh interpreter each: sys.modules stays clean here) ---------------------------

PROCESSOR_MODULE = """\
from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor
from amazon_kclpy.v2 import processor as v2processor
from amazon_kclpy.messages import InitializeInput, ProcessRecordsInput, Record, ShutdownInput
from amazon_kclpy.checkpoint_error import CheckpointError
import amazon_kclpy.kcl


class RecordProcessor(processor.RecordProcessorBase):
    def initialize(self, initialize_input):
        assert isinstance(initialize_input, InitializeInput)
        self.shard_id = initialize_input.shard_id

    def process_records(self, process_records_input):
        assert isinstance(process_records_input, ProcessRecordsInput)
        assert all(isinstance(r, Record) for r in process_records_input.records)
        try:
            process_records_input.checkpointer.checkpoint("999")
        except kcl.CheckpointError as error:
            self.error = error.value

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(RecordProcessor()).run()
"""

DRIVER = """\
import sys
from datetime import datetime, timezone

from shardwise.checkpoint.checkpointer import Checkpointer
from shardwise.checkpoint.sequence import TRIM_HORIZON, ExtendedSequenceNumber
from shardwise.kclpy import checkpoint_error_class, install_amazon_kclpy_shim, kclpy_factory
from shardwise.processor import InitializationInput, ProcessRecordsInput
from shardwise.retrieval.model import Record

installed = install_amazon_kclpy_shim()
import user_processor
import amazon_kclpy
from amazon_kclpy import kcl

factory = kclpy_factory(user_processor.RecordProcessor)
adapter = factory()


class Writer:
    def write_checkpoint(self, *args, **kwargs):
        pass


checkpointer = Checkpointer("shardId-0", "t", Writer(), last_checkpoint=TRIM_HORIZON)
checkpointer.advance(ExtendedSequenceNumber("5"))
adapter.initialize(InitializationInput(shard_id="shardId-0", extended_sequence_number=TRIM_HORIZON))
stamp = datetime(2026, 1, 1, tzinfo=timezone.utc)
adapter.process_records(ProcessRecordsInput(records=[Record(b"x", "k", "5", stamp)], checkpointer=checkpointer))
print("installed", installed)
print("package", amazon_kclpy.__name__, amazon_kclpy.__file__)
print("error-class", checkpoint_error_class().__module__, checkpoint_error_class() is kcl.CheckpointError)
print("error", adapter.delegate.error)
print("shard", adapter.delegate.shard_id)
"""


def run_driver(tmp_path: Path, extra_path: Path | None = None) -> dict[str, str]:
    (tmp_path / "user_processor.py").write_text(PROCESSOR_MODULE)
    paths = [str(tmp_path), str(SRC)] + ([str(extra_path)] if extra_path else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_the_stand_in_lets_an_unmodified_processor_import_without_amazon_kclpy(tmp_path: Path) -> None:
    out = run_driver(tmp_path)
    assert out["installed"] == "True"
    assert out["package"].startswith("shardwise.kclpy.compat ")
    assert out["error-class"] == "shardwise.kclpy.compat.checkpoint_error True"
    assert out["error"] == "IllegalArgumentException"  # 999 was never delivered
    assert out["shard"] == "shardId-0"


@pytest.mark.parametrize("version", ["3.1.3", "2.5.8"])
def test_an_installed_amazon_kclpy_wins_over_the_stand_in(tmp_path: Path, version: str) -> None:
    try:
        root = kcl_install(version)  # type: ignore[arg-type]
    except JavaKclUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    out = run_driver(tmp_path, root)
    assert out["installed"] == "False"
    assert out["package"].startswith("amazon_kclpy ")
    assert out["package"].endswith(str(root / "amazon_kclpy" / "__init__.py"))
    assert out["error-class"] == "amazon_kclpy.checkpoint_error True"  # the real class, as kcl.CheckpointError
    assert out["error"] == "IllegalArgumentException"
    assert out["shard"] == "shardId-0"


def test_the_stand_in_is_not_installed_over_an_imported_real_package() -> None:
    script = textwrap.dedent(
        """
        import sys, types
        fake = types.ModuleType("amazon_kclpy")
        sys.modules["amazon_kclpy"] = fake
        from shardwise.kclpy.shim import install_amazon_kclpy_shim, real_amazon_kclpy_available
        print(install_amazon_kclpy_shim(), real_amazon_kclpy_available(), sys.modules["amazon_kclpy"] is fake)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]
