"""Map an amazon-kclpy (KCL MultiLangDaemon) ``.properties`` file onto shardwise's configuration.

Two steps:

* :func:`parse_properties` reads the Java ``.properties`` syntax exactly as ``java.util.Properties.load`` does
  (see :mod:`shardwise.kclpy.syntax`).
* :func:`map_properties` turns the MultiLangDaemon's keys into dotted shardwise config keys (the ``overrides``
  of :func:`shardwise.config.merged`). Keys that only the Java daemon uses (its child processes, credential
  providers, CloudWatch metrics, table-creation options, …) are accepted and listed in
  :attr:`KclpyProperties.ignored` with the reason; a setting shardwise cannot honour (``retrievalMode =
  FANOUT``) is a :class:`~shardwise.errors.ConfigurationError`; an **unknown key is an error too** (the Java
  daemon silently ignores a misspelt key — shardwise names it, with the closest known key) unless
  ``ignore_unknown`` is set, in which case it is listed in :attr:`KclpyProperties.unknown`.

The key table is :data:`~shardwise.kclpy.keys.MAPPED_KEYS` (and :data:`~shardwise.kclpy.keys.IGNORED_KEYS`) in
:mod:`shardwise.kclpy.keys`; ``docs/kclpy.md`` prints it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardwise.errors import ConfigurationError
from shardwise.kclpy.keys import (
    IGNORED_KEYS,
    KNOWN_KEYS,
    MAPPED_KEYS,
    POLLING_KEYS,
    BadValue,
    epoch_seconds,
    stream_from_arn,
)
from shardwise.kclpy.syntax import PropertyLine, parse_properties, parse_properties_lines, read_properties_file

__all__ = [
    "IgnoredKey",
    "KclpyProperties",
    "PropertyLine",
    "load_properties",
    "map_properties",
    "parse_properties",
    "parse_properties_lines",
]


@dataclass(frozen=True, slots=True)
class IgnoredKey:
    """A key shardwise accepted but does not use, its value and why."""

    key: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value}: {self.reason}"


@dataclass(frozen=True)
class KclpyProperties:
    """A kclpy properties file mapped onto shardwise's configuration.

    * ``overrides``: dotted config keys (``leases.failover_time_ms``) → values, for
      :func:`shardwise.config.merged` — the settings the file makes, plus ``backend = "aws"`` (a kclpy
      application lives in DynamoDB and Kinesis).
    * ``defaults``: KCL 3.x defaults that differ from shardwise's and that the file left unset
      (``client_version_config = "3x"``, as KCL 3.x's ``CLIENT_VERSION_CONFIG_3X``). The caller applies them
      only where the user did not choose otherwise (see :meth:`config_values`).
    * ``ignored``: the keys only the Java daemon uses, with their values and the reason.
    * ``notes``: differences worth a line on stderr (fan-out by default in Java, an empty value, …).
    * ``unknown``: keys nobody knows (only with ``ignore_unknown``; otherwise they are an error).
    """

    source: str
    properties: Mapping[str, str]
    overrides: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    ignored: tuple[IgnoredKey, ...] = ()
    notes: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def config_values(self, user: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The dotted overrides to lay *under* the user's own settings (``user``: their dotted keys).

        The ``client_version_config`` default is left out when the user picked an ``assignment`` or a
        ``client_version_config`` of their own, so ``--assignment lease-count-2x`` still means plain 2.x; and
        the file's ``kinesisEndpoint``/``dynamoDBEndpoint`` when the user gave ``endpoint_url`` (both services).
        """
        chosen = set(user or ())
        values = dict(self.overrides)
        if "endpoint_url" in chosen:  # the user's endpoint for both services beats the file's per-service ones
            values.pop("kinesis_endpoint_url", None)
            values.pop("dynamodb_endpoint_url", None)
        for key, value in self.defaults.items():
            if key == "client_version_config" and chosen & {"assignment", "client_version_config"}:
                continue
            values.setdefault(key, value)
        return values

    def report_lines(self) -> list[str]:
        """What to print on stderr once at start-up: ignored keys, notes and unknown keys."""
        lines: list[str] = []
        if self.ignored:
            lines.append(f"kclpy properties {self.source}: ignored (Java daemon only):")
            lines.extend(f"  {item}" for item in self.ignored)
        if self.notes:
            lines.append(f"kclpy properties {self.source}: notes:")
            lines.extend(f"  {note}" for note in self.notes)
        if self.unknown:
            lines.append(
                f"kclpy properties {self.source}: unknown keys ignored (--kclpy-ignore-unknown): "
                + ", ".join(self.unknown)
            )
        return lines


def _where(source: str, line: int | None) -> str:
    return f"{source} line {line}" if line is not None else source


def _suggestion(key: str) -> str:
    by_lower = {known.lower(): known for known in KNOWN_KEYS}
    if key.lower() in by_lower:
        return f" (did you mean {by_lower[key.lower()]!r}? keys are case-sensitive)"
    close = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _canonical(key: str) -> str:
    """The Java daemon matches the AwsCredentialsProvider* keys in any case; every other key exactly."""
    lowered = key.lower()
    for name in ("AwsCredentialsProviderDynamoDB", "AwsCredentialsProviderCloudWatch", "AwsCredentialsProvider"):
        if lowered == name.lower():
            return name
    return key


def map_properties(
    entries: Mapping[str, str] | Sequence[PropertyLine],
    *,
    source: str = "properties",
    ignore_unknown: bool = False,
) -> KclpyProperties:
    """Map MultiLangDaemon properties onto shardwise config keys (see the module docstring)."""
    listed = [PropertyLine(k, v, 0) for k, v in entries.items()] if isinstance(entries, Mapping) else list(entries)
    by_key = {_canonical(entry.key): entry for entry in listed}  # later entries win, as in Java
    props = {key: entry.value for key, entry in by_key.items()}
    line_of: dict[str, int | None] = {key: entry.line or None for key, entry in by_key.items()}

    unknown = sorted(key for key in props if key not in KNOWN_KEYS)
    if unknown and not ignore_unknown:
        described = "; ".join(f"{key} ({_where(source, line_of.get(key))}){_suggestion(key)}" for key in unknown)
        raise ConfigurationError(
            f"unknown kclpy propert{'y' if len(unknown) == 1 else 'ies'} in {source}: {described}. The Java "
            "daemon silently ignores keys it does not know; shardwise refuses them so that a typo is not lost. "
            "Fix or remove them, or pass --kclpy-ignore-unknown"
        )

    overrides: dict[str, Any] = {"backend": "aws"}
    ignored: list[IgnoredKey] = []
    notes: list[str] = []
    present: dict[str, str] = {}
    for key, value in props.items():
        if key not in KNOWN_KEYS:
            continue
        if not value.strip() and key not in IGNORED_KEYS:
            notes.append(f"{key} has an empty value ({_where(source, line_of.get(key))}): treated as unset")
            continue
        present[key] = value

    for key, value in present.items():
        where = _where(source, line_of.get(key))
        if key in IGNORED_KEYS:
            ignored.append(IgnoredKey(key, value.strip(), IGNORED_KEYS[key]))
            continue
        mapping = MAPPED_KEYS.get(key)
        if mapping is None:
            continue
        try:
            converted = mapping.convert(value)
        except BadValue as exc:
            raise ConfigurationError(f"kclpy property {key} ({where}) must be {exc}, got {value!r}") from None
        for target in mapping.targets:
            overrides[target] = converted

    # The stream: an ARN wins over a name, as in KCL.
    if "streamArn" in present:
        where = _where(source, line_of.get("streamArn"))
        name, arn_region = stream_from_arn(present["streamArn"], where)
        overrides["stream_name"] = name
        region = overrides.get("region")
        if region is not None and region != arn_region:
            raise ConfigurationError(
                f"streamArn ({where}) is in region {arn_region} but regionName is {region}; shardwise uses one region "
                "for Kinesis and DynamoDB: make them agree"
            )
        overrides["region"] = arn_region
        if "streamName" in present:
            ignored.append(IgnoredKey("streamName", present["streamName"].strip(), "streamArn takes precedence"))
    elif "streamName" in present:
        overrides["stream_name"] = present["streamName"].strip()

    _map_initial_position(present, overrides, source, line_of)
    _map_retrieval_mode(present, ignored, notes, source, line_of)

    defaults: dict[str, Any] = {}
    if "client_version_config" not in overrides:
        defaults["client_version_config"] = "3x"
        notes.append(
            "clientVersionConfig not set: KCL 3.x's default CLIENT_VERSION_CONFIG_3X applies "
            "(client_version_config = 3x) unless --assignment or --client-version-config says otherwise"
        )
    return KclpyProperties(
        source=source,
        properties=props,
        overrides=overrides,
        defaults=defaults,
        ignored=tuple(ignored),
        notes=tuple(notes),
        unknown=tuple(unknown),
    )


def _map_initial_position(
    present: Mapping[str, str], overrides: dict[str, Any], source: str, line_of: Mapping[str, int | None]
) -> None:
    position = present.get("initialPositionInStream")
    extended = present.get("initialPositionInStreamExtended")
    if extended is not None:
        where = _where(source, line_of.get("initialPositionInStreamExtended"))
        if position is not None and position.strip().upper() != "AT_TIMESTAMP":
            raise ConfigurationError(
                f"initialPositionInStreamExtended ({where}) asks for AT_TIMESTAMP but initialPositionInStream is "
                f"{position.strip()}: remove one of them"
            )
        overrides["initial_position"] = "AT_TIMESTAMP"
        overrides["initial_timestamp"] = epoch_seconds(extended, where)
        return
    if position is None:
        return
    where = _where(source, line_of.get("initialPositionInStream"))
    name = position.strip().upper()
    if name == "AT_TIMESTAMP":
        raise ConfigurationError(
            f"initialPositionInStream = AT_TIMESTAMP ({where}) needs the timestamp: set "
            "initialPositionInStreamExtended to a Unix time in seconds instead"
        )
    if name not in ("TRIM_HORIZON", "LATEST"):
        raise ConfigurationError(
            f"initialPositionInStream ({where}) must be TRIM_HORIZON or LATEST, got {position.strip()!r}"
        )
    overrides["initial_position"] = name


def _map_retrieval_mode(
    present: Mapping[str, str],
    ignored: list[IgnoredKey],
    notes: list[str],
    source: str,
    line_of: Mapping[str, int | None],
) -> None:
    raw = present.get("retrievalMode")
    mode = raw.strip().upper() if raw is not None else "DEFAULT"
    if mode == "POLLING":
        ignored.append(IgnoredKey("retrievalMode", raw.strip() if raw else mode, "shardwise always polls"))
        return
    if mode == "FANOUT":
        raise ConfigurationError(
            f"retrievalMode = FANOUT ({_where(source, line_of.get('retrievalMode'))}): shardwise does not read with "
            "enhanced fan-out (SubscribeToShard) yet; set retrievalMode = POLLING (records, checkpoints and leases "
            "are the same; only the read path differs)"
        )
    if mode != "DEFAULT":
        raise ConfigurationError(
            f"retrievalMode ({_where(source, line_of.get('retrievalMode'))}) must be POLLING, FANOUT or DEFAULT, "
            f"got {raw!r}"
        )
    if raw is not None:
        ignored.append(IgnoredKey("retrievalMode", raw.strip(), "shardwise always polls"))
    if not POLLING_KEYS & set(present):
        notes.append(
            "retrievalMode not set (DEFAULT) and no polling key set: the Java daemon would read with enhanced "
            "fan-out; shardwise polls with GetRecords (same records, checkpoints and leases)"
        )


def load_properties(path: str | Path, *, ignore_unknown: bool = False) -> KclpyProperties:
    """Read and map a kclpy properties file (:func:`parse_properties_lines` + :func:`map_properties`)."""
    file = Path(path)
    return map_properties(
        parse_properties_lines(read_properties_file(file)), source=str(file), ignore_unknown=ignore_unknown
    )
