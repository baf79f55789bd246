"""``shardwise run``: one worker."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any

import click

from shardwise.backends import open_lease_store, open_stream_source
from shardwise.cli._options import BACKEND_OPTIONS
from shardwise.config import build_config, load_config_file, merged, parse_override
from shardwise.errors import ConfigurationError, ShardwiseError
from shardwise.metrics import LogMetricsSink, MetricsSink
from shardwise.processor import RecordProcessorFactory
from shardwise.worker import Worker

__all__ = ["load_factory", "open_lease_store", "open_stream_source", "run"]

_backend_options = BACKEND_OPTIONS


def load_factory(spec: str) -> RecordProcessorFactory:
    """Import ``MODULE:ATTRIBUTE`` — a record-processor class or a function returning a processor.

    Like ``python -m`` (and gunicorn), the current directory is searched first, so ``myapp:Processor`` finds
    ``./myapp.py`` without ``PYTHONPATH``.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"processor must be given as MODULE:FACTORY (e.g. myapp.processing:Processor), got {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r} for the processor: {exc}") from exc
    except Exception as exc:
        raise ConfigurationError(
            f"importing module {module_name!r} for the processor failed: {type(exc).__name__}: {exc}"
        ) from exc
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigurationError(f"{spec} is not callable: give a processor class or a factory function")
    return factory


#: ``run``'s flags that set the config key of the same name.
_CONFIG_FLAGS = (
    "application_name",
    "stream_name",
    "backend",
    "db",
    "endpoint_url",
    "kinesis_endpoint_url",
    "dynamodb_endpoint_url",
    "region",
    "worker_id",
    "initial_position",
    "initial_timestamp",
    "assignment",
    "client_version_config",
)
#: ``run``'s flags that set a key of a config section: flag → dotted key.
_SECTION_FLAGS: Mapping[str, str] = {
    "failover_time_ms": "leases.failover_time_ms",
    "max_leases_for_worker": "leases.max_leases_for_worker",
    "max_leases_to_steal_at_one_time": "leases.max_leases_to_steal_at_one_time",
    "max_records": "consumer.max_records",
    "idle_time_between_reads_ms": "consumer.idle_time_between_reads_ms",
}


def _overrides(**flags: Any) -> dict[str, Any]:
    return {key: value for key, value in flags.items() if value is not None}


@click.command()
@click.argument("processor", required=False)
@click.option(
    "--processor",
    "processor_option",
    metavar="MODULE:FACTORY",
    default=None,
    help="The record processor, as an option (same as the PROCESSOR argument; give one of the two).",
)
@click.option(
    "--kclpy-properties",
    "kclpy_properties",
    type=click.Path(dir_okay=False),
    default=None,
    help="An amazon-kclpy (MultiLangDaemon) .properties file: its settings become the defaults (flags, --config "
    "and --set override them) and PROCESSOR is an unmodified amazon-kclpy record processor class (v1, v2 or v3 "
    "API). See docs/kclpy.md.",
)
@click.option(
    "--kclpy-ignore-unknown",
    is_flag=True,
    help="With --kclpy-properties: warn about unknown keys instead of refusing them.",
)
@click.option("--app", "application_name", default=None, help="Application name (names the lease table).")
@click.option("--stream", "stream_name", default=None, help="Stream to consume.")
@_backend_options
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML config file (see docs); flags override it.",
)
@click.option("--worker-id", default=None, help="Worker id (default: host:pid:random).")
@click.option(
    "--initial-position",
    type=click.Choice(["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]),
    default=None,
    help="Where a new application starts reading. [default: LATEST]",
)
@click.option("--initial-timestamp", default=None, help="ISO 8601 timestamp for AT_TIMESTAMP.")
@click.option(
    "--assignment",
    type=click.Choice(["lease-count-2x", "utilization-3x"]),
    default=None,
    help="Lease assignment generation: KCL 2.x lease-count taking, or the KCL 3.x leader assigning "
    "by measured load. [default: lease-count-2x]",
)
@click.option(
    "--client-version-config",
    type=click.Choice(["compatible-with-2x", "3x"]),
    default=None,
    help="Run the KCL 2.x -> 3.x migration state machine (the Migration3.0 item decides the generation and "
    "workers switch at runtime): compatible-with-2x to migrate a running 2.x fleet, 3x to finish. Unset: "
    "--assignment decides, no migration.",
)
@click.option("--failover-time-ms", type=int, default=None, help="Lease duration. [default: 10000]")
@click.option("--max-leases-for-worker", type=int, default=None)
@click.option("--max-leases-to-steal-at-one-time", type=int, default=None)
@click.option("--max-records", type=int, default=None, help="GetRecords limit. [default: 10000]")
@click.option("--idle-time-between-reads-ms", type=int, default=None, help="[default: 1500]")
@click.option(
    "--metrics",
    "metrics_sink",
    type=click.Choice(["none", "log"]),
    default="none",
    show_default=True,
    help="Where the worker's metrics go. log: one INFO line per datum on the shardwise.metrics logger, shown "
    "even without -v (e.g. 'metric Migration CurrentState:3xWorker=1 Count').",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any config key, e.g. --set consumer.parent_shard_poll_interval_ms=1000 (repeatable).",
)
def run(
    processor: str | None,
    processor_option: str | None,
    kclpy_properties: str | None,
    kclpy_ignore_unknown: bool,
    config_file: str | None,
    settings: tuple[str, ...],
    metrics_sink: str,
    **flags: Any,
) -> None:
    """Run one worker: consume STREAM for application APP with the record processor PROCESSOR
    (MODULE:FACTORY, a processor class or a function returning one; or --processor).

    With --kclpy-properties FILE, run an amazon-kclpy application instead: the MultiLangDaemon properties give
    the application, stream, endpoints and tuning, and PROCESSOR is its unmodified kclpy processor class.

    SIGTERM or SIGINT shut the worker down gracefully: every processor gets shutdown_requested (and should
    checkpoint), leases are released for other workers to take; a second signal exits at once.
    """
    processor_spec = _processor_spec(processor, processor_option)
    try:
        kclpy = None
        if kclpy_properties is not None:
            from shardwise.kclpy.properties import load_properties

            kclpy = load_properties(kclpy_properties, ignore_unknown=kclpy_ignore_unknown)
        elif kclpy_ignore_unknown:
            raise ConfigurationError("--kclpy-ignore-unknown goes with --kclpy-properties")
        file_values = load_config_file(config_file) if config_file else {}
        overrides = _overrides(
            **{flag: flags.pop(flag) for flag in _CONFIG_FLAGS},
            **{key: flags.pop(flag) for flag, key in _SECTION_FLAGS.items()},
        )
        for item in settings:
            key, value = parse_override(item)
            overrides[key] = value
        if kclpy is not None:
            # Lowest layer: the properties; then the --config file; then flags and --set.
            user = {**_flatten(file_values), **overrides}
            base = merged({}, kclpy.config_values(user))
            worker_config, backend = build_config(merged(base, user))
            for line in kclpy.report_lines():
                click.echo(line, err=True)
            from shardwise.kclpy.adapter import kclpy_factory
            from shardwise.kclpy.shim import install_amazon_kclpy_shim

            install_amazon_kclpy_shim()
            factory = kclpy_factory(load_factory(processor_spec))
        else:
            worker_config, backend = build_config(merged(file_values, overrides))
            factory = load_factory(processor_spec)
        worker = Worker(
            worker_config,
            store=open_lease_store(backend, worker_config.table_name),
            source=open_stream_source(backend, worker_config.stream_name),
            processor_factory=factory,
            metrics=_metrics_sink(metrics_sink),
        )
    except ShardwiseError as exc:
        raise click.ClickException(str(exc)) from exc

    signals_seen = 0

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            click.echo(f"second {signal.Signals(signum).name}: exiting at once", err=True)
            sys.exit(130)
        worker.request_shutdown()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    click.echo(
        f"worker {worker.worker_id} consuming {worker_config.stream_name} for {worker_config.application_name}",
        err=True,
    )
    try:
        worker.run()
    except ShardwiseError as exc:
        attempts = worker.initialization_attempts
        tried = f" (gave up after {attempts} initialization attempts)" if attempts > 1 else ""
        raise click.ClickException(f"worker {worker.worker_id} could not start: {exc}{tried}") from exc
    if worker.stop_reason is not None:
        # Stopped cleanly (processors checkpointed, leases released where possible) because of a feature level
        # it cannot run or a permanent error (missing stream, damaged database, access denied).
        raise click.ClickException(str(worker.stop_reason))


def _processor_spec(argument: str | None, option: str | None) -> str:
    """PROCESSOR as the argument or as --processor (one of the two, or both the same)."""
    if argument is None and option is None:
        raise click.UsageError("give the record processor: PROCESSOR (MODULE:FACTORY) or --processor MODULE:FACTORY")
    if argument is not None and option is not None and argument != option:
        raise click.UsageError(f"two processors given ({argument} and --processor {option}): give one")
    spec = option if option is not None else argument
    assert spec is not None
    return spec


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config mapping (sections as nested mappings) as dotted keys, for layering with ``merged``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _metrics_sink(choice: str) -> MetricsSink | None:
    """``--metrics``: None (the worker's null sink) or a log sink whose INFO lines pass the WARNING default."""
    if choice != "log":
        return None
    metrics_logger = logging.getLogger("shardwise.metrics")
    if not metrics_logger.isEnabledFor(logging.INFO):
        metrics_logger.setLevel(logging.INFO)
    return LogMetricsSink(metrics_logger)
