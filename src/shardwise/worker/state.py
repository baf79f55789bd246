"""What a worker gives the shard consumers of a stateful processor (:class:`StateWiring`): the application's
changelog, opened and created on the first stateful open (a stateless application never touches it), and the
format levels its stores are opened with — from the ``state.format`` feature (:func:`state_levels`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from shardwise.backends import backend_of
from shardwise.errors import ConfigurationError
from shardwise.leases.store import LeaseStore
from shardwise.lifecycle.stateful import StateConfig, StateServices, ensured_once
from shardwise.metrics.sink import MetricsSink
from shardwise.state.port import OpenedStore
from shardwise.versions.features import STATE_FORMAT, SupportedRange
from shardwise.worker.config import WorkerConfig

__all__ = ["StateWiring", "state_levels"]


def state_levels(finalized: int, supported: SupportedRange) -> tuple[int, int]:
    """``(write_level, readable_level)`` of this worker's stores: it writes the finalized ``state.format`` level
    (its own highest while none is finalized) and reads up to its own highest. A worker pinned to a release
    without state stores cannot run a stateful processor."""
    if supported.max_level < 1:
        raise ConfigurationError(
            "this worker supports no state.format level (features.release pins it to a release before 0.3, "
            "which had no state stores): unpin it, or pin it to 0.3 or later, to run a stateful processor"
        )
    write = finalized if finalized > 0 else supported.max_level
    return write, supported.max_level


def _open_local_store(path: Path, *, shard_id: str, engine: str, write_level: int, readable_level: int) -> OpenedStore:
    """:func:`shardwise.state.engines.open_local_store`, imported on the first stateful open: a stateless worker
    never loads the engines (nor ``rocksdict``), which would add to every worker's start-up."""
    from shardwise.state.engines import open_local_store  # noqa: PLC0415 (see above)

    return open_local_store(
        path, shard_id=shard_id, engine=engine, write_level=write_level, readable_level=readable_level
    )


class StateWiring:
    """Builds each stateful shard consumer's :class:`~shardwise.lifecycle.stateful.StateServices`."""

    def __init__(
        self,
        config: WorkerConfig,
        store: LeaseStore,
        metrics: MetricsSink,
        clock_ns: Callable[[], int],
        levels: Callable[[], tuple[Mapping[str, int], Mapping[str, SupportedRange]]],
    ) -> None:
        """``levels()``: the finalized feature levels as last read (empty before any read) and this worker's
        supported ranges."""
        settings = config.state
        self._config = config
        self._levels = levels
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._dir = Path(settings.dir) / config.application_name
        self._changelog = ensured_once(
            lambda: backend_of(store).open_changelog(config.application_name, table_name=settings.changelog_table)
        )

    def services(self) -> StateServices:
        """The services as of now: the levels follow the feature's finalized level when a store is opened."""
        settings = self._config.state
        finalized, ranges = self._levels()
        write, readable = state_levels(finalized.get(STATE_FORMAT, 0), ranges.get(STATE_FORMAT, SupportedRange(0, 0)))
        return StateServices(
            config=StateConfig(
                dir_path=self._dir,
                engine=settings.engine,
                commit_interval_ms=settings.commit_interval_ms,
                write_level=write,
                readable_level=readable,
            ),
            changelog=self._changelog,
            open_store=_open_local_store,
            metrics=self._metrics,
            clock_ns=self._clock_ns,
        )
