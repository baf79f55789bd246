"""Worker metrics: CPU sources on fake /proc and cgroup trees, selection, collection, reporting, the fleet's
view with stale clean-up, and the per-lease throughput EMA."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardwise.assignment.model import CPU, MISSED, WorkerMetricStats, metrics_from_attributes
from shardwise.errors import ConfigurationError, DependencyError
from shardwise.metrics import InMemoryMetricsSink
from shardwise.tables.items import ABSENT, ItemRecord, ItemTable, ItemWrite, Layout, Namespace
from shardwise.worker_metrics import (
    EKS_TOKEN_FILE,
    RAW_SAMPLES,
    CgroupV1Cpu,
    CgroupV2Cpu,
    LeaseThroughputRecorder,
    ProcStatCpu,
    UtilizationSource,
    WorkerMetricsCollector,
    WorkerMetricsConfig,
    WorkerMetricsReporter,
    active_workers,
    available_processors,
    classify_workers,
    clean_up_stale,
    select_cpu_source,
)

NOW = 1_750_000_000  # epoch seconds

# -- helpers ----------------------------------------------------------------------------------------------


class FakeItemTable:
    """An in-memory ItemTable (worker-metrics namespace) following the port's documented semantics."""

    def __init__(self, table_name: str = "app-WorkerMetricStats") -> None:
        self._name = table_name
        self.items: dict[str, dict[str, Any]] = {}
        self.fail_upsert: Exception | None = None
        self.fail_delete_keys: set[str] = set()
        self.upserts: list[tuple[str, dict[str, Any]]] = []

    @property
    def table_name(self) -> str:
        return self._name

    @property
    def layout(self) -> Layout:
        return "legacy"

    @property
    def namespace(self) -> Namespace:
        return "worker-metrics"

    def exists(self) -> bool:
        return True

    def create_if_not_exists(self) -> bool:
        return False

    def get(self, key: str, *, consistent: bool = True) -> ItemRecord | None:
        item = self.items.get(key)
        return None if item is None else ItemRecord(key, copy.deepcopy(item))

    def scan(self) -> list[ItemRecord]:
        return [ItemRecord(key, copy.deepcopy(self.items[key])) for key in sorted(self.items)]

    def put_if_absent(self, key: str, attributes: Mapping[str, Any]) -> bool:
        if key in self.items:
            return False
        self.items[key] = copy.deepcopy(dict(attributes))
        return True

    def _holds(self, item: Mapping[str, Any], expect: Mapping[str, Any] | None) -> bool:
        for name, value in (expect or {}).items():
            if value is ABSENT:
                if name in item:
                    return False
            elif name not in item or item[name] != value:
                return False
        return True

    def update(
        self,
        key: str,
        *,
        set_attributes: Mapping[str, Any],
        remove_attributes: Iterable[str] = (),
        expect: Mapping[str, Any] | None = None,
    ) -> ItemRecord | None:
        item = self.items.get(key)
        if item is None or not self._holds(item, expect):
            return None
        item.update(copy.deepcopy(dict(set_attributes)))
        for name in remove_attributes:
            item.pop(name, None)
        return ItemRecord(key, copy.deepcopy(item))

    def upsert(self, key: str, attributes: Mapping[str, Any]) -> None:
        if self.fail_upsert is not None:
            raise self.fail_upsert
        self.upserts.append((key, copy.deepcopy(dict(attributes))))
        self.items.setdefault(key, {}).update(copy.deepcopy(dict(attributes)))

    def delete(self, key: str, *, expect: Mapping[str, Any] | None = None) -> bool:
        if key in self.fail_delete_keys:
            raise DependencyError(f"delete of {key} failed")
        item = self.items.get(key)
        if item is None or not self._holds(item, expect):
            return False
        del self.items[key]
        return True

    def transact(self, writes: Sequence[ItemWrite]) -> bool:
        if not 1 <= len(writes) <= 25 or len({write.key for write in writes}) != len(writes):
            raise ValueError("transact takes 1 to 25 writes with distinct keys")
        for write in writes:
            item = self.items.get(write.key)
            if (item is not None) if write.create else (item is None or not self._holds(item, write.expect)):
                return False
        for write in writes:
            if write.create:
                self.items[write.key] = copy.deepcopy(dict(write.set_attributes))
            else:
                self.update(write.key, set_attributes=write.set_attributes, remove_attributes=write.remove_attributes)
        return True


def test_fake_item_table_satisfies_the_port() -> None:
    assert isinstance(FakeItemTable(), ItemTable)


class Clock:
    """A settable monotonic clock in nanoseconds."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance_s(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="ascii")


def proc_stat(user: int, nice: int, system: int, idle: int, iowait: int, *, irq: int = 0, softirq: int = 0) -> str:
    return (
        f"cpu  {user} {nice} {system} {idle} {iowait} {irq} {softirq} 0 0 0\n"
        f"cpu0 {user} {nice} {system} {idle} {iowait} {irq} {softirq} 0 0 0\nintr 1 2 3\n"
    )


def cpu_stat_v2(usage_usec: int) -> str:
    return f"usage_usec {usage_usec}\nuser_usec {usage_usec // 2}\nsystem_usec {usage_usec // 2}\nnr_periods 0\n"


def make_v2(root: Path, *, cpu_max: str | None, cpuset: str | None, usage_usec: int = 0) -> None:
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    write(root, "sys/fs/cgroup/cpu.stat", cpu_stat_v2(usage_usec))
    if cpu_max is not None:
        write(root, "sys/fs/cgroup/cpu.max", cpu_max + "\n")
    if cpuset is not None:
        write(root, "sys/fs/cgroup/cpuset.cpus.effective", cpuset + "\n")


def make_v1(root: Path, *, quota: int, period: int = 100_000, usage_ns: int = 0, usage_dir: str = "cpu") -> None:
    write(root, f"sys/fs/cgroup/{usage_dir}/cpuacct.usage", f"{usage_ns}\n")
    write(root, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", f"{quota}\n")
    write(root, "sys/fs/cgroup/cpu/cpu.cfs_period_us", f"{period}\n")


# -- /proc/stat -------------------------------------------------------------------------------------------


def test_proc_stat_first_call_is_zero_then_delta_formula(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(100, 20, 30, 800, 50))
    cpu = ProcStatCpu(tmp_path)
    assert cpu.name == CPU
    assert cpu.max_utilization == 100.0
    assert cpu.sample() == 0.0
    # busy +150 (user +100, system +50), idle +100: total +250 → (250 − 100) / 250 = 60 %
    write(tmp_path, "proc/stat", proc_stat(200, 20, 80, 900, 50))
    assert cpu.sample() == pytest.approx(60.0)
    # iowait counts in the total and not as idle: busy +100, idle +50, iowait +50 → 150 / 200 = 75 %
    write(tmp_path, "proc/stat", proc_stat(250, 70, 80, 950, 100))
    assert cpu.sample() == pytest.approx(75.0)
    # irq and softirq are ignored: only idle moved → 0 %
    write(tmp_path, "proc/stat", proc_stat(250, 70, 80, 1050, 100, irq=500, softirq=500))
    assert cpu.sample() == 0.0
    # fully busy → 100 %
    write(tmp_path, "proc/stat", proc_stat(350, 70, 80, 1050, 100))
    assert cpu.sample() == 100.0


def test_proc_stat_without_progress_is_a_missed_sample(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    cpu = ProcStatCpu(tmp_path)
    assert cpu.sample() == 0.0
    assert cpu.sample() is None


def test_proc_stat_unreadable_or_garbled_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="stat"):
        ProcStatCpu(tmp_path).sample()
    write(tmp_path, "proc/stat", "intr 1 2 3\n")
    with pytest.raises(ValueError, match="cpu"):
        ProcStatCpu(tmp_path).sample()


# -- cgroup v2 --------------------------------------------------------------------------------------------


def test_cgroup_v2_against_the_quota(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max="200000 100000", cpuset="0-7", usage_usec=1_000_000)
    clock = Clock()
    cpu = CgroupV2Cpu(tmp_path, clock_ns=clock, cpu_count=lambda: 16)
    assert cpu.limit_cores() == 2.0
    assert cpu.sample() == 0.0
    clock.advance_s(2)
    write(tmp_path, "sys/fs/cgroup/cpu.stat", cpu_stat_v2(2_500_000))  # 1.5 CPU-seconds in 2 s of 2 CPUs
    assert cpu.sample() == pytest.approx(37.5)


def test_cgroup_v2_unlimited_quota_uses_the_cpuset(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max="max 100000", cpuset="0-1,4,6-7")
    clock = Clock()
    cpu = CgroupV2Cpu(tmp_path, clock_ns=clock, cpu_count=lambda: 16)
    assert cpu.limit_cores() == 5.0
    assert cpu.sample() == 0.0
    clock.advance_s(1)
    write(tmp_path, "sys/fs/cgroup/cpu.stat", cpu_stat_v2(2_000_000))  # 2 CPUs of 5
    assert cpu.sample() == pytest.approx(40.0)


def test_cgroup_v2_without_cpuset_falls_back_to_the_cpu_count(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max=None, cpuset=None)
    clock = Clock()
    cpu = CgroupV2Cpu(tmp_path, clock_ns=clock, cpu_count=lambda: 8)
    assert cpu.limit_cores() == 8.0
    cpu.sample()
    clock.advance_s(1)
    write(tmp_path, "sys/fs/cgroup/cpu.stat", cpu_stat_v2(1_000_000))
    assert cpu.sample() == pytest.approx(12.5)
    assert CgroupV2Cpu(tmp_path, cpu_count=lambda: None).limit_cores() == 1.0


def test_cgroup_v2_is_capped_at_100(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max="50000 100000", cpuset="0-3")
    clock = Clock()
    cpu = CgroupV2Cpu(tmp_path, clock_ns=clock)
    assert cpu.sample() == 0.0
    clock.advance_s(1)
    write(tmp_path, "sys/fs/cgroup/cpu.stat", cpu_stat_v2(2_000_000))  # 2 CPUs against 0.5 → 400 %
    assert cpu.sample() == 100.0


def test_cgroup_v2_without_wall_progress_is_missed_and_missing_usage_raises(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max="100000 100000", cpuset="0")
    cpu = CgroupV2Cpu(tmp_path, clock_ns=Clock(5))
    assert cpu.sample() == 0.0
    assert cpu.sample() is None
    write(tmp_path, "sys/fs/cgroup/cpu.stat", "user_usec 1\n")
    with pytest.raises(ValueError, match="usage_usec"):
        cpu.sample()


# -- cgroup v1 --------------------------------------------------------------------------------------------


def test_cgroup_v1_against_the_quota(tmp_path: Path) -> None:
    make_v1(tmp_path, quota=150_000, usage_ns=10**9)
    clock = Clock()
    cpu = CgroupV1Cpu(tmp_path, clock_ns=clock, cpu_count=lambda: 8)
    assert cpu.limit_cores() == 1.5
    assert cpu.sample() == 0.0
    clock.advance_s(1)
    write(tmp_path, "sys/fs/cgroup/cpu/cpuacct.usage", f"{10**9 + 750_000_000}\n")  # 0.75 of 1.5 CPUs
    assert cpu.sample() == pytest.approx(50.0)


def test_cgroup_v1_unlimited_quota_uses_available_processors(tmp_path: Path) -> None:
    make_v1(tmp_path, quota=-1)
    clock = Clock()
    cpu = CgroupV1Cpu(tmp_path, clock_ns=clock, cpu_count=lambda: 4)
    assert cpu.limit_cores() == 4.0
    assert cpu.sample() == 0.0
    clock.advance_s(2)
    write(tmp_path, "sys/fs/cgroup/cpu/cpuacct.usage", f"{2 * 10**9}\n")  # 1 CPU of 4
    assert cpu.sample() == pytest.approx(25.0)


def test_cgroup_v1_separately_mounted_cpuacct_and_cap(tmp_path: Path) -> None:
    make_v1(tmp_path, quota=100_000, usage_dir="cpuacct")
    clock = Clock()
    cpu = CgroupV1Cpu(tmp_path, clock_ns=clock)
    assert cpu.sample() == 0.0
    clock.advance_s(1)
    write(tmp_path, "sys/fs/cgroup/cpuacct/cpuacct.usage", f"{3 * 10**9}\n")
    assert cpu.sample() == 100.0


def test_cgroup_v1_missing_usage_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cpuacct\.usage"):
        CgroupV1Cpu(tmp_path).sample()


def test_available_processors_is_positive() -> None:
    assert available_processors() >= 1


# -- selection --------------------------------------------------------------------------------------------


def select(root: Path, env: Mapping[str, str] | None = None, **kwargs: Any) -> UtilizationSource | None:
    kwargs.setdefault("cpu_count", lambda: 4)
    kwargs.setdefault("host_cpu_count", lambda: 4)
    return select_cpu_source(root, env if env is not None else {}, **kwargs)


def test_select_disabled_gives_none(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    assert select(tmp_path, config=WorkerMetricsConfig(disable_worker_metrics=True)) is None
    assert select(tmp_path, config=WorkerMetricsConfig(cpu_source="none")) is None
    assert isinstance(select(tmp_path, config=WorkerMetricsConfig(cpu_source="proc-stat")), ProcStatCpu)


def test_select_forced_sources(tmp_path: Path) -> None:
    make_v1(tmp_path, quota=-1)
    assert isinstance(select(tmp_path, config=WorkerMetricsConfig(cpu_source="cgroup")), CgroupV1Cpu)
    make_v2(tmp_path, cpu_max="max 100000", cpuset="0-3")
    assert isinstance(select(tmp_path, config=WorkerMetricsConfig(cpu_source="cgroup")), CgroupV2Cpu)
    with pytest.raises(ConfigurationError, match="cpu_source"):
        WorkerMetricsConfig(cpu_source="gpu")  # type: ignore[arg-type]


def test_select_nothing_readable_gives_none(tmp_path: Path) -> None:
    assert select(tmp_path) is None
    write(tmp_path, "proc/stat", "garbage\n")
    assert select(tmp_path) is None


def test_select_plain_host_balances_on_throughput(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Host-wide CPU cannot tell several workers of one host apart: only used when configured.
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    with caplog.at_level(logging.INFO, logger="shardwise.worker_metrics.cpu"):
        assert select(tmp_path) is None
    assert "proc-stat" in caplog.text
    source = select(tmp_path, config=WorkerMetricsConfig(cpu_source="proc-stat"))
    assert isinstance(source, ProcStatCpu)
    assert isinstance(source, UtilizationSource)


def test_select_v2_container_with_quota_uses_cgroup(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    make_v2(tmp_path, cpu_max="100000 100000", cpuset="0-3")
    assert isinstance(select(tmp_path), CgroupV2Cpu)


def test_select_v2_unlimited_uses_throughput_unless_the_cpuset_is_smaller(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    make_v2(tmp_path, cpu_max="max 100000", cpuset="0-3")
    assert select(tmp_path) is None
    assert isinstance(select(tmp_path, host_cpu_count=lambda: 16), CgroupV2Cpu)


def test_select_v2_host_root_cgroup_without_cpu_max_uses_throughput(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    make_v2(tmp_path, cpu_max=None, cpuset=None)
    assert select(tmp_path) is None


def test_select_v1_container_with_quota_uses_cgroup(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    make_v1(tmp_path, quota=50_000)
    assert isinstance(select(tmp_path), CgroupV1Cpu)


def test_select_v1_without_quota_uses_throughput(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    make_v1(tmp_path, quota=-1)
    assert select(tmp_path) is None


def test_select_limited_cgroup_without_proc_stat(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max="100000 100000", cpuset=None)
    assert isinstance(select(tmp_path), CgroupV2Cpu)


def test_select_eks_follows_kcl_whatever_the_limit(tmp_path: Path) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    write(tmp_path, EKS_TOKEN_FILE, "token")
    make_v1(tmp_path, quota=-1)
    assert isinstance(select(tmp_path), CgroupV1Cpu)
    make_v2(tmp_path, cpu_max="max 100000", cpuset="0-3")  # cgroup.controllers now exists → v2
    assert isinstance(select(tmp_path), CgroupV2Cpu)


def test_select_eks_with_unreadable_cgroup_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    write(tmp_path, EKS_TOKEN_FILE, "token")
    with caplog.at_level(logging.WARNING, logger="shardwise.worker_metrics.cpu"):
        assert select(tmp_path) is None
    assert "EKS" in caplog.text


@pytest.mark.parametrize("variable", ["ECS_CONTAINER_METADATA_URI", "ECS_CONTAINER_METADATA_URI_V4"])
def test_select_ecs_does_not_call_the_endpoint_and_falls_back(
    tmp_path: Path, variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {variable: "http://169.254.170.2/v4/abc"}
    write(tmp_path, "proc/stat", proc_stat(1, 0, 1, 10, 0))
    with caplog.at_level(logging.INFO, logger="shardwise.worker_metrics.cpu"):
        assert select(tmp_path, env) is None
    assert "task-metadata" in caplog.text
    make_v2(tmp_path, cpu_max="150000 100000", cpuset=None)
    assert isinstance(select(tmp_path, env), CgroupV2Cpu)


def test_select_on_this_machine_returns_a_working_source_or_none() -> None:
    source = select_cpu_source()
    if source is not None:
        first = source.sample()
        assert first == 0.0
        second = source.sample()
        assert second is None or 0.0 <= second <= 100.0


# -- configuration ----------------------------------------------------------------------------------------


def test_config_defaults_are_kcls() -> None:
    config = WorkerMetricsConfig()
    assert config.in_memory_capture_frequency_ms == 1_000
    assert config.reporter_frequency_ms == 30_000
    assert config.persisted_values_per_metric == 10
    assert config.stale_entry_cleanup_ms == 86_400_000
    assert config.disable_worker_metrics is False
    assert config.ema_alpha == 0.5
    assert config.active_window_s == 60.0
    assert config.stale_after_s == 86_400.0
    assert config.lease_throughput_ema_alpha == 0.2  # not KCL's fixed 0.5: see the field's documentation


def test_the_default_lease_throughput_smoothing_keeps_batch_quantization_within_a_fraction_of_the_band() -> None:
    """An evenly fed lease whose renewal intervals hold two or three equal batches in turn (reads every 1.5 s,
    intervals of 3.3 s): KCL's 0.5 leaves it swinging ±6.7 % around its rate, the default ±2.2 % — a third, far
    inside the 10 % rebalance threshold even before a worker's leases average out."""

    def swing(alpha: float) -> float:
        clock = [0]
        recorder = LeaseThroughputRecorder(lambda: clock[0], alpha=alpha)
        values = []
        for interval in range(200):
            for _ in range(2 + interval % 2):
                recorder.record("lease", 1024 * 30)
            clock[0] += 3_000_000_000
            value = recorder.throughput_kbps("lease")
            assert value is not None
            values.append(value)
        steady = values[50:]
        mean = sum(steady) / len(steady)
        return max(abs(value - mean) for value in steady) / mean

    kcl, default = swing(0.5), swing(WorkerMetricsConfig().lease_throughput_ema_alpha)
    assert kcl > 0.06
    assert default < kcl / 2.5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("in_memory_capture_frequency_ms", 0),
        ("reporter_frequency_ms", -1),
        ("reporter_frequency_ms", True),
        ("persisted_values_per_metric", 0),
        ("persisted_values_per_metric", 1.5),
        ("stale_entry_cleanup_ms", 0),
        ("disable_worker_metrics", "yes"),
        ("ema_alpha", 0.0),
        ("ema_alpha", 1.5),
        ("ema_alpha", True),
        ("lease_throughput_ema_alpha", 0),
        ("lease_throughput_ema_alpha", "0.2"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        WorkerMetricsConfig(**{field: value})  # type: ignore[arg-type]


# -- collection -------------------------------------------------------------------------------------------


class ScriptedSource:
    """A source returning scripted samples; an Exception instance in the script is raised."""

    def __init__(
        self, script: Iterable[float | Exception | None], name: str = CPU, max_utilization: float = 100.0
    ) -> None:
        self._script = iter(script)
        self.name = name
        self.max_utilization = max_utilization

    def sample(self) -> float | None:
        value = next(self._script)
        if isinstance(value, Exception):
            raise value
        return value


def test_collector_averages_since_the_last_report_and_skips_missed(caplog: pytest.LogCaptureFixture) -> None:
    source = ScriptedSource([10.0, 20.0, None, OSError("gone"), 30.0, 40.0])
    assert isinstance(source, UtilizationSource)
    collector = WorkerMetricsCollector(source, WorkerMetricsConfig(), Clock())
    with caplog.at_level(logging.WARNING, logger="shardwise.worker_metrics.collector"):
        assert [collector.capture() for _ in range(5)] == [10.0, 20.0, None, None, 30.0]
    assert collector.missed_captures == 2
    assert "gone" not in caplog.text  # only the first of a streak is a warning
    assert "no sample" in caplog.text
    assert collector.report_values() == {CPU: (20.0,)}
    collector.capture()
    assert collector.report_values() == {CPU: (20.0, 40.0)}
    assert collector.operating_range() == {CPU: (100.0,)}


def test_collector_interval_without_samples_is_minus_one() -> None:
    collector = WorkerMetricsCollector(ScriptedSource([None, None, 50.0]))
    assert collector.report_values() == {CPU: (MISSED,)}
    collector.capture()
    collector.capture()
    assert collector.report_values() == {CPU: (MISSED, MISSED)}
    collector.capture()
    assert collector.report_values() == {CPU: (MISSED, MISSED, 50.0)}


def test_collector_rounds_averages_to_6_decimals() -> None:
    collector = WorkerMetricsCollector(ScriptedSource([0.0, 0.0, 1.0, 2 / 3, 0.0, 0.0]))
    for _ in range(3):
        collector.capture()
    assert collector.report_values() == {CPU: (0.333333,)}
    for _ in range(3):
        collector.capture()
    assert collector.report_values() == {CPU: (0.333333, 0.222222)}


def test_collector_keeps_the_newest_values_per_metric() -> None:
    collector = WorkerMetricsCollector(ScriptedSource(float(v) for v in range(100)))
    for _ in range(12):
        collector.capture()
        reported = collector.report_values()
    assert reported == {CPU: tuple(float(v) for v in range(2, 12))}
    small = WorkerMetricsCollector(
        ScriptedSource(float(v) for v in range(100)), WorkerMetricsConfig(persisted_values_per_metric=3)
    )
    for _ in range(5):
        small.capture()
        reported = small.report_values()
    assert reported == {CPU: (2.0, 3.0, 4.0)}


def test_collector_raw_ring_holds_300_samples() -> None:
    collector = WorkerMetricsCollector(ScriptedSource([100.0] + [0.0] * RAW_SAMPLES))
    for _ in range(RAW_SAMPLES + 1):
        collector.capture()
    assert RAW_SAMPLES == 300
    assert collector.report_values() == {CPU: (0.0,)}  # the oldest sample fell out of the ring


def test_collector_without_source_reports_nothing() -> None:
    collector = WorkerMetricsCollector(None)
    assert collector.capture() is None
    assert collector.report_values() == {}
    assert collector.operating_range() == {}
    assert collector.source is None


def test_collector_records_capture_and_report_times() -> None:
    clock = Clock(7)
    collector = WorkerMetricsCollector(ScriptedSource([1.0]), clock_ns=clock)
    collector.capture()
    clock.advance_s(1)
    collector.report_values()
    assert (collector.last_capture_ns, collector.last_report_ns) == (7, 1_000_000_007)


# -- reporting --------------------------------------------------------------------------------------------


def test_reporter_writes_exactly_lut_sts_opr_and_reads_back() -> None:
    table = FakeItemTable()
    collector = WorkerMetricsCollector(ScriptedSource([25.0, 35.0]))
    collector.capture()
    collector.capture()
    sink = InMemoryMetricsSink()
    reporter = WorkerMetricsReporter(
        table, "worker-1", collector, WorkerMetricsConfig(), clock_epoch_s=lambda: NOW + 0.9, metrics=sink
    )
    written = reporter.report()
    assert table.upserts == [("worker-1", {"lut": NOW, "sts": {"C": [30.0]}, "opr": {"C": [100.0]}})]
    attributes = table.items["worker-1"]
    assert set(attributes) == {"lut", "sts", "opr"}
    assert type(attributes["lut"]) is int
    assert written == WorkerMetricStats("worker-1", NOW, {"C": (30.0,)}, {"C": (100.0,)})
    assert metrics_from_attributes("worker-1", attributes) == written
    assert sink.values("WorkerMetricStatsReporter", "Success") == [1.0]
    assert len(sink.values("WorkerMetricStatsReporter", "Time")) == 1
    # the next report appends to the list; the item is a partial write that keeps other attributes
    table.items["worker-1"]["sup"] = 1
    second = reporter.report()
    assert second.stats == {"C": (30.0, MISSED)}
    assert table.items["worker-1"] == {"lut": NOW, "sts": {"C": [30.0, -1.0]}, "opr": {"C": [100.0]}, "sup": 1}


def test_reporter_without_cpu_source_writes_empty_maps() -> None:
    table = FakeItemTable()
    reporter = WorkerMetricsReporter(table, "w", WorkerMetricsCollector(None), clock_epoch_s=lambda: float(NOW))
    written = reporter.report()
    assert table.items == {"w": {"lut": NOW, "sts": {}, "opr": {}}}
    assert written == WorkerMetricStats("w", NOW)
    assert written.is_valid()
    assert not written.is_failing()
    assert reporter.worker_id == "w"


def test_reporter_reraises_write_errors_unchanged() -> None:
    table = FakeItemTable()
    error = DependencyError("throttled")
    table.fail_upsert = error
    sink = InMemoryMetricsSink()
    reporter = WorkerMetricsReporter(
        table, "w", WorkerMetricsCollector(ScriptedSource([1.0])), clock_epoch_s=lambda: float(NOW), metrics=sink
    )
    with pytest.raises(DependencyError) as raised:
        reporter.report()
    assert raised.value is error
    assert sink.values("WorkerMetricStatsReporter", "Success") == [0.0]


def test_reporter_needs_a_worker_id() -> None:
    with pytest.raises(ConfigurationError, match="worker_id"):
        WorkerMetricsReporter(FakeItemTable(), "", WorkerMetricsCollector(None))


def test_reporter_end_to_end_with_a_cgroup_source(tmp_path: Path) -> None:
    make_v2(tmp_path, cpu_max="200000 100000", cpuset=None)
    clock = Clock()
    collector = WorkerMetricsCollector(CgroupV2Cpu(tmp_path, clock_ns=clock), clock_ns=clock)
    for usage_usec in (0, 1_000_000, 3_000_000):  # samples: 0 (first), 50 %, 100 %
        write(tmp_path, "sys/fs/cgroup/cpu.stat", cpu_stat_v2(usage_usec))
        collector.capture()
        clock.advance_s(1)
    table = FakeItemTable()
    WorkerMetricsReporter(table, "w", collector, clock_epoch_s=lambda: float(NOW)).report()
    assert table.items["w"] == {"lut": NOW, "sts": {"C": [50.0]}, "opr": {"C": [100.0]}}


# -- the fleet's view -------------------------------------------------------------------------------------


def entry(
    lut: int | None, sts: dict[str, list[float]] | None = None, opr: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "sts": sts if sts is not None else {"C": [10.0]},
        "opr": opr if opr is not None else {"C": [100]},
    }
    if lut is not None:
        item["lut"] = lut
    return item


def fleet_table() -> FakeItemTable:
    table = FakeItemTable()
    table.items = {
        "active": entry(NOW - 5),
        "active-edge": entry(NOW - 60),  # exactly 2 × 30 s old: still active
        "throughput-only": {"lut": NOW, "sts": {}, "opr": {}},
        "recovered": entry(NOW, sts={"C": [-1.0, -1.0, 12.0]}),
        "failing": entry(NOW, sts={"C": [12.0, -1.0]}),
        "inactive": entry(NOW - 61),
        "inactive-day": entry(NOW - 86_400),  # exactly one day: not yet stale
        "stale": entry(NOW - 86_401),
        "stale-invalid": entry(NOW - 100_000, opr={}),
        "no-lut": entry(None),
        "no-opr": entry(NOW, opr={}),
        "zero-opr": entry(NOW, opr={"C": [0]}),
        "malformed": {"lut": NOW, "sts": {"C": "ten"}, "opr": {}},
    }
    return table


def test_classify_workers() -> None:
    snapshot = classify_workers(fleet_table(), NOW, WorkerMetricsConfig())
    assert [s.worker_id for s in snapshot.active] == ["active", "active-edge", "recovered", "throughput-only"]
    assert [s.worker_id for s in snapshot.failing] == ["failing"]
    assert [s.worker_id for s in snapshot.inactive] == ["inactive", "inactive-day"]
    assert [s.worker_id for s in snapshot.invalid] == ["no-lut", "no-opr", "zero-opr"]
    assert [s.worker_id for s in snapshot.stale] == ["stale", "stale-invalid"]
    assert snapshot.malformed == ("malformed",)


def test_active_workers_and_malformed_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shardwise.worker_metrics.fleet"):
        active, stale = active_workers(fleet_table(), NOW, WorkerMetricsConfig())
    assert [s.worker_id for s in active] == ["active", "active-edge", "recovered", "throughput-only"]
    assert active[0] == WorkerMetricStats("active", NOW - 5, {"C": (10.0,)}, {"C": (100.0,)})
    assert stale == ["stale", "stale-invalid"]
    assert "'malformed'" in caplog.text
    assert "app-WorkerMetricStats" in caplog.text


def test_active_window_follows_the_reporter_frequency() -> None:
    table = FakeItemTable()
    table.items = {"w": entry(NOW - 15)}
    assert [s.worker_id for s in active_workers(table, NOW, WorkerMetricsConfig(reporter_frequency_ms=7_499))[0]] == []
    assert [s.worker_id for s in active_workers(table, NOW, WorkerMetricsConfig(reporter_frequency_ms=7_500))[0]] == [
        "w"
    ]
    assert active_workers(table, NOW + 86_400, WorkerMetricsConfig(stale_entry_cleanup_ms=60_000))[1] == ["w"]


def test_clean_up_stale_is_conditioned_on_lut(caplog: pytest.LogCaptureFixture) -> None:
    table = fleet_table()
    table.items["stale-2"] = entry(NOW - 90_000)
    table.items["stale-broken"] = entry(NOW - 90_000)
    table.items["stale-gone"] = entry(NOW - 90_000)
    stale = classify_workers(table, NOW).stale
    assert [s.worker_id for s in stale] == ["stale", "stale-2", "stale-broken", "stale-gone", "stale-invalid"]
    table.items["stale-2"]["lut"] = NOW  # the worker came back after the scan
    del table.items["stale-gone"]
    table.fail_delete_keys.add("stale-broken")
    with caplog.at_level(logging.WARNING, logger="shardwise.worker_metrics.fleet"):
        assert clean_up_stale(table, list(stale)) == 2
    assert "stale-broken" in caplog.text
    assert "stale" not in table.items
    assert "stale-invalid" not in table.items
    assert table.items["stale-2"]["lut"] == NOW
    assert "stale-broken" in table.items
    assert clean_up_stale(table, []) == 0


def test_reporting_classifying_and_cleaning_up_on_sqlite(tmp_path: Path) -> None:
    from shardwise.backends.sqlite.items import open_sqlite_item_tables
    from shardwise.backends.sqlite.leases import SQLiteLeaseStore

    store = SQLiteLeaseStore(tmp_path / "leases.db", "app")
    try:
        store.create_table_if_not_exists()
        _, metrics_table, _ = open_sqlite_item_tables(store, "app")
        collector = WorkerMetricsCollector(ScriptedSource([40.0, 60.0]))
        collector.capture()
        collector.capture()
        written = WorkerMetricsReporter(metrics_table, "worker-1", collector, clock_epoch_s=lambda: NOW + 0.5).report()
        metrics_table.upsert("worker-old", {"lut": NOW - 90_000, "sts": {"C": [1.5]}, "opr": {"C": [100]}})
        metrics_table.upsert("worker-back", {"lut": NOW - 90_000, "sts": {}, "opr": {}})

        record = metrics_table.get("worker-1")
        assert record is not None
        assert record.entity_type == "WORKER_METRIC_STATS"
        assert dict(record.attributes) == {"lut": NOW, "sts": {"C": [50]}, "opr": {"C": [100]}}
        assert metrics_from_attributes("worker-1", record.attributes) == written

        snapshot = classify_workers(metrics_table, NOW + 10)
        assert snapshot.active == (written,)
        assert [s.worker_id for s in snapshot.stale] == ["worker-back", "worker-old"]
        metrics_table.upsert("worker-back", {"lut": NOW})  # reported again after the scan
        assert clean_up_stale(metrics_table, snapshot.stale) == 1
        assert [r.key for r in metrics_table.scan()] == ["worker-1", "worker-back"]
    finally:
        store.close()


# -- per-lease throughput ---------------------------------------------------------------------------------


def test_throughput_ema_over_several_intervals() -> None:
    recorder = LeaseThroughputRecorder(Clock())
    assert recorder.throughput_kbps("shardId-0", 2.0) is None
    recorder.record("shardId-0", 4 * 1024)
    recorder.record("shardId-0", 6 * 1024)
    assert recorder.throughput_kbps("shardId-0", 2.0) == 5.0  # first value taken as is
    recorder.record("shardId-0", 30 * 1024)
    assert recorder.throughput_kbps("shardId-0", 2.0) == 10.0  # 0.5 × 15 + 0.5 × 5
    assert recorder.throughput_kbps("shardId-0", 2.0) == 5.0  # nothing delivered: 0.5 × 0 + 0.5 × 10
    recorder.record("shardId-0", 1)
    # 1 byte = 1/1024 KB over the default renewer interval 3.308 s; 0.5 × 0.000295… + 0.5 × 5, 6 decimals
    assert recorder.throughput_kbps("shardId-0", 3.308) == round(0.5 * (1 / 1024 / 3.308) + 2.5, 6) == 2.500148
    assert recorder.current_kbps("shardId-0") == 2.500148


def test_throughput_seed_forget_and_keys() -> None:
    recorder = LeaseThroughputRecorder(Clock())
    recorder.seed("shardId-1", 8.0)
    assert recorder.current_kbps("shardId-1") == 8.0
    recorder.record("shardId-1", 4 * 1024)
    assert recorder.throughput_kbps("shardId-1", 1.0) == 6.0
    recorder.seed("shardId-2", None)
    assert recorder.lease_keys() == ["shardId-1", "shardId-2"]
    assert recorder.throughput_kbps("shardId-2", 1.0) == 0.0
    recorder.forget("shardId-1")
    recorder.forget("shardId-unknown")
    assert recorder.throughput_kbps("shardId-1", 1.0) is None
    assert recorder.current_kbps("shardId-1") is None


def test_throughput_interval_from_the_clock() -> None:
    clock = Clock(1_000)
    recorder = LeaseThroughputRecorder(clock)
    recorder.record("s", 2048)
    clock.advance_s(0.5)
    assert recorder.throughput_kbps("s") == 4.0
    recorder.record("s", 1024)
    assert recorder.throughput_kbps("s") == 4.0  # no time passed: unchanged, the bytes wait
    clock.advance_s(1)
    assert recorder.throughput_kbps("s") == 2.5  # 0.5 × 1 + 0.5 × 4


def test_throughput_rejects_bad_input() -> None:
    recorder = LeaseThroughputRecorder(Clock())
    with pytest.raises(ValueError, match="num_bytes"):
        recorder.record("s", -1)
    with pytest.raises(ValueError, match="interval_s"):
        recorder.throughput_kbps("s", 0.0)
    with pytest.raises(ConfigurationError, match="alpha"):
        LeaseThroughputRecorder(alpha=0.0)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.none() | st.floats(min_value=0, max_value=1e6),
    intervals=st.lists(
        st.tuples(
            st.lists(st.integers(min_value=0, max_value=10**7), max_size=5),
            st.floats(min_value=0.01, max_value=60),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_throughput_matches_a_reference_ema(seed: float | None, intervals: list[tuple[list[int], float]]) -> None:
    recorder = LeaseThroughputRecorder(Clock())
    if seed is not None:
        recorder.seed("s", seed)
    previous = seed
    known = seed is not None
    for batches, interval in intervals:
        for size in batches:
            recorder.record("s", size)
        known = known or bool(batches)
        if not known:  # never recorded nor seeded: nothing to report
            assert recorder.throughput_kbps("s", interval) is None
            continue
        current_kb_per_s = sum(batches) / 1024 / interval
        expected = current_kb_per_s if previous is None else (current_kb_per_s + previous) / 2
        previous = round(expected, 6)
        assert recorder.throughput_kbps("s", interval) == previous


def test_throughput_recorder_is_thread_safe() -> None:
    # alpha 1 and an interval of 1/1024 s make each value exactly the bytes recorded since the previous call
    recorder = LeaseThroughputRecorder(Clock(), alpha=1.0)
    keys = ["shardId-a", "shardId-b"]
    writers, batches = 6, 3_000
    stop = threading.Event()
    collected: dict[str, float] = dict.fromkeys(keys, 0.0)
    barrier = threading.Barrier(writers + 1)

    def write_batches(index: int) -> None:
        barrier.wait()
        for n in range(batches):
            recorder.record(keys[(index + n) % 2], index + 1)

    def renew() -> None:
        barrier.wait()
        while not stop.is_set():
            for key in keys:
                collected[key] += recorder.throughput_kbps(key, 1 / 1024) or 0.0

    threads = [threading.Thread(target=write_batches, args=(i,)) for i in range(writers)]
    renewer = threading.Thread(target=renew)
    renewer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    renewer.join()
    for key in keys:
        collected[key] += recorder.throughput_kbps(key, 1 / 1024) or 0.0
    expected_total = sum((i + 1) * batches for i in range(writers))
    assert sum(collected.values()) == expected_total
    assert collected["shardId-a"] == sum((i + 1) * (batches // 2) for i in range(writers))
