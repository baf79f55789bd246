"""The worker's periodic tasks: one daemon thread each, all stopped by one event, each woken early by name."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Loop", "Loops"]

logger = logging.getLogger(__name__)


class Loop:
    """A periodic task on its own daemon thread; ``wake()`` runs it early."""

    def __init__(
        self,
        name: str,
        interval_s: Callable[[], float],
        task: Callable[[], None],
        stop: threading.Event,
        *,
        initial_delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self._initial_delay_s = initial_delay_s
        self._interval_s = interval_s
        self._task = task
        self._stop = stop
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        if self._initial_delay_s > 0:
            self._wake.wait(self._initial_delay_s)
            self._wake.clear()
        while not self._stop.is_set():
            try:
                self._task()
            except Exception:
                logger.exception("%s loop failed; it runs again at its next interval", self.name)
            self._wake.wait(self._interval_s())
            self._wake.clear()


class Loops:
    """The worker's loops by name. Every loop exists in every generation: a loop whose work the current
    generation does not do runs as a no-op, so a switch needs no thread started or stopped."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._loops: dict[str, Loop] = {}

    def add(
        self, name: str, interval_s: Callable[[], float], task: Callable[[], None], *, initial_delay_s: float = 0.0
    ) -> None:
        self._loops[name] = Loop(name, interval_s, task, self._stop, initial_delay_s=initial_delay_s)

    def wake(self, *names: str) -> None:
        for name in names:
            self._loops[name].wake()

    def start(self) -> None:
        for loop in self._loops.values():
            loop.start()

    def stop(self, timeout_s: float) -> None:
        """Stop every loop and wait up to ``timeout_s`` for each (a run under way finishes first)."""
        self._stop.set()
        for loop in self._loops.values():
            loop.join(timeout_s)
