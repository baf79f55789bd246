"""Worker configuration from a TOML file and command-line overrides, validated with clear errors.

A file looks like this (every key optional except the two names; defaults are KCL's)::

    application_name = "orders"
    stream_name = "orders-stream"
    backend = "local"                 # or "aws"
    db = "shardwise.db"               # local backend: the SQLite file
    initial_position = "TRIM_HORIZON" # LATEST (default), TRIM_HORIZON or AT_TIMESTAMP
    assignment = "utilization-3x"     # KCL 3.x generation (default: "lease-count-2x")
    # initial_timestamp = "2026-11-21T00:00:00Z"
    # Bounds on every backend call (unset: derived from leases.failover_time_ms, see
    # shardwise.backends.config.derived_call_limits); shown with their values at the default failover time:
    # dynamodb_connect_timeout_ms = 1000    dynamodb_read_timeout_ms = 2000    dynamodb_max_attempts = 3
    # kinesis_connect_timeout_ms = 1000     kinesis_read_timeout_ms = 10000    kinesis_max_attempts = 3
    # sqlite_busy_timeout_ms = 3333

    [leases]
    failover_time_ms = 10000
    local_expiry_margin_ms = 1000     # unset: a tenth of the failover time
    max_leases_for_worker = 2147483647
    max_leases_to_steal_at_one_time = 1

    [consumer]
    max_records = 10000
    idle_time_between_reads_ms = 1500
    checkpoint_backoff_max_ms = 10000 # a failing checkpoint backs off from task_backoff_time_ms up to this
    max_checkpoint_failures = 6       # permanent failures in a row before the lease is given up

    [utilization]                      # KCL 3.x balancing (kcl-protocol.md §6.6)
    rebalance_threshold_percentage = 10
    [coordination]
    leader_lease_duration_ms = 120000
    layout = "auto"                    # or "single-table" / "legacy"

    # Fleet migration 2.x -> 3.x (kcl-protocol.md §4): the Migration3.0 item decides the generation.
    # client_version_config = "compatible-with-2x"   # or "3x"; unset: no migration state machine
    [migration]
    client_version_poll_interval_ms = 60000
    stabilization_period_ms = 600000

    [retrieval]
    client = "fast"                    # or "boto3": the client that reads Kinesis and updates leases (aws backend)

    [state]                            # stateful processors only (shardwise.processor.StatefulRecordProcessor)
    dir = "shardwise-state"            # local stores: <dir>/<application>/<shard_id>/
    engine = "sqlite"                  # or "rocksdb" (pip install 'shardwise[rocksdb]')
    commit_interval_ms = 5000          # commit (and checkpoint) at least this often
    # changelog_table = "orders-state" # DynamoDB; default <application_name>-state

An unknown key or a value of the wrong type is an error naming the key, what it expects and how to fix it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from shardwise.assignment.taker import TakerConfig
from shardwise.assignment.utilization import AssignmentConfig
from shardwise.backends.config import BackendConfig, RetrievalConfig
from shardwise.errors import ConfigurationError
from shardwise.leasing.shard_sync import InitialPosition
from shardwise.lifecycle.consumer import ConsumerConfig
from shardwise.lifecycle.stateful import StateSettings
from shardwise.versions.features import FeaturesConfig
from shardwise.versions.migration_rules import MigrationConfig
from shardwise.worker import CoordinationConfig, WorkerConfig
from shardwise.worker_metrics import WorkerMetricsConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["BackendConfig", "build_config", "load_config_file", "parse_override"]


_SECTIONS: dict[str, type[Any]] = {
    "leases": TakerConfig,
    "consumer": ConsumerConfig,
    "utilization": AssignmentConfig,
    "worker_metrics": WorkerMetricsConfig,
    "coordination": CoordinationConfig,
    "migration": MigrationConfig,
    "features": FeaturesConfig,
    "state": StateSettings,
}
#: Sections of the backend config (the rest of it is top-level keys).
_BACKEND_SECTIONS: dict[str, type[Any]] = {"retrieval": RetrievalConfig}
_BACKEND_KEYS = {f.name for f in dataclasses.fields(BackendConfig)} - set(_BACKEND_SECTIONS)
_WORKER_KEYS = {f.name for f in dataclasses.fields(WorkerConfig) if f.name not in _SECTIONS} - {"initial_position"}
_TOP_KEYS = _BACKEND_KEYS | _WORKER_KEYS | {"initial_position", "initial_timestamp"}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a plain mapping (validated later by :func:`build_config`)."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            return dict(tomllib.load(handle))
    except FileNotFoundError:
        raise ConfigurationError(f"config file {file} does not exist; check the --config path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {file} is not valid TOML: {exc}") from exc


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` (value in TOML syntax; a bare word is taken as a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigurationError(f"--set expects KEY=VALUE (e.g. leases.failover_time_ms=2000), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def _merge(base: dict[str, Any], dotted_key: str, value: Any) -> None:
    parts = dotted_key.split(".")
    node = base
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigurationError(f"config key {part!r} is a value, not a section; cannot set {dotted_key}")
        node = child
    node[parts[-1]] = value


def _check_value(where: str, expected: Any, value: Any) -> Any:
    origin = typing.get_origin(expected)
    options = typing.get_args(expected) if origin in (typing.Union, types.UnionType) else (expected,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is Literal and value in typing.get_args(option):
            return value
        if option is datetime and isinstance(value, (str, datetime)):
            return _timestamp(where, value)
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigurationError(f"config key {where} must be {names}, got {value!r}")


def _type_name(option: Any) -> str:
    if typing.get_origin(option) is Literal:
        return " or ".join(repr(choice) for choice in typing.get_args(option))
    return str(getattr(option, "__name__", option))


def _timestamp(where: str, value: object) -> datetime:
    if isinstance(value, datetime):
        stamp = value
    else:
        try:
            if not isinstance(value, str):  # e.g. a TOML date without a time, or a number from --set
                raise ValueError(value)
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigurationError(
                f"config key {where} must be an ISO 8601 timestamp such as 2026-11-21T00:00:00Z, got {value!r}"
            ) from None
    if stamp.tzinfo is None:
        raise ConfigurationError(f"config key {where} needs a time zone (e.g. a trailing Z for UTC)")
    return stamp


def _build_section(cls: type[Any], values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys in {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(known))}"
        )
    checked = {key: _check_value(prefix + key, hints[key], value) for key, value in values.items()}
    return cls(**checked)


def build_config(values: Mapping[str, Any]) -> tuple[WorkerConfig, BackendConfig]:
    """Validate a config mapping (file contents merged with overrides) into worker and backend configs."""
    values = dict(values)
    all_sections = {**_SECTIONS, **_BACKEND_SECTIONS}
    unknown = sorted(k for k in values if k not in _TOP_KEYS and k not in all_sections)
    if unknown:
        raise ConfigurationError(
            f"unknown config key(s) {', '.join(unknown)}; valid top-level keys: "
            f"{', '.join(sorted(_TOP_KEYS))}, and the sections [{'], ['.join(all_sections)}]"
        )
    sections: dict[str, Any] = {}
    for name, cls in all_sections.items():
        raw = values.pop(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"config key {name} must be a section ([{name}]), got {raw!r}")
        sections[name] = _build_section(cls, raw, f"{name}.")
    backend_sections = {name: sections.pop(name) for name in _BACKEND_SECTIONS}
    position_name = values.pop("initial_position", "LATEST")
    timestamp_raw = values.pop("initial_timestamp", None)
    timestamp = None if timestamp_raw is None else _timestamp("initial_timestamp", timestamp_raw)
    position = _initial_position(position_name, timestamp)
    if timestamp is not None and sections["consumer"].initial_timestamp is None:
        sections["consumer"] = dataclasses.replace(sections["consumer"], initial_timestamp=timestamp)
    backend_values = {k: values.pop(k) for k in list(values) if k in _BACKEND_KEYS}
    backend = dataclasses.replace(_build_section(BackendConfig, backend_values, ""), **backend_sections)
    for required in ("application_name", "stream_name"):
        if not values.get(required):
            flag = "--app" if required == "application_name" else "--stream"
            raise ConfigurationError(f"{required} is required: set it in the config file or with {flag}")
    hints = typing.get_type_hints(WorkerConfig)
    checked = {key: _check_value(key, hints[key], value) for key, value in values.items()}
    worker = WorkerConfig(**checked, initial_position=position, **sections)
    # Call limits left unset are derived from this worker's failover time (see derived_call_limits).
    return worker, backend.with_failover_time(worker.leases.failover_time_ms)


def _initial_position(name: Any, timestamp: datetime | None) -> InitialPosition:
    if name == "TRIM_HORIZON":
        return InitialPosition.trim_horizon()
    if name == "LATEST":
        return InitialPosition.latest()
    if name == "AT_TIMESTAMP":
        if timestamp is None:
            raise ConfigurationError("initial_position AT_TIMESTAMP needs initial_timestamp (ISO 8601, with zone)")
        return InitialPosition.at_timestamp(timestamp)
    raise ConfigurationError(f"initial_position must be TRIM_HORIZON, LATEST or AT_TIMESTAMP, got {name!r}")


def merged(file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """File values with dotted-key overrides applied (overrides win)."""
    result: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in file_values.items()}
    for key, value in overrides.items():
        if value is not None:
            _merge(result, key, value)
    return result
