"""The stateful scenarios' processor: :class:`~shardwise.demo.counting.CountingProcessor`, plus a kill inside a
commit chosen by the test.

``SHARDWISE_TEST_KILL_AT=<stage>:<n>`` (stage ``after-changelog`` or ``after-store``) makes the worker SIGKILL
itself at that stage of its ``n``-th commit (counted over the process, every shard): after the changelog append
and before the local commit, or after the local commit and before the lease checkpoint. The hook is
``shardwise.lifecycle.stateful.set_commit_observer``; it is installed once per process, when the first processor
is created. ``SHARDWISE_TEST_KILL_MARK`` names a file the worker creates just before it kills itself, so the test
knows the kill happened inside a commit.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from shardwise.demo.counting import CountingProcessor
from shardwise.lifecycle.stateful import set_commit_observer

__all__ = ["KILL_AT_ENV", "KILL_MARK_ENV", "KillingCountingProcessor"]

KILL_AT_ENV = "SHARDWISE_TEST_KILL_AT"
KILL_MARK_ENV = "SHARDWISE_TEST_KILL_MARK"
STAGES = ("after-changelog", "after-store")

_lock = threading.Lock()
_installed: list[bool] = []  # one entry once the hook is installed (or found not wanted) in this process


def _install() -> None:
    with _lock:
        if _installed:
            return
        _installed.append(True)
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    stage, _, nth = spec.partition(":")
    if stage not in STAGES or not nth.isdigit():
        raise ValueError(f"{KILL_AT_ENV} must be <{'|'.join(STAGES)}>:<n>, got {spec!r}")
    target = int(nth)
    seen = 0
    mark = os.environ.get(KILL_MARK_ENV)

    def observe(at: str, shard_id: str) -> None:
        nonlocal seen
        if at != stage:
            return
        with _lock:
            seen += 1
            if seen != target:
                return
        if mark:
            Path(mark).write_text(f"{at} {shard_id}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    set_commit_observer(observe)


class KillingCountingProcessor(CountingProcessor):
    """:class:`CountingProcessor` in a worker that may SIGKILL itself inside a commit (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        _install()
