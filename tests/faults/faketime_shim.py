"""Work around libfaketime 0.9.10 in a worker whose wall clock it fakes (imported by ``ledger_processor`` when
``$SHARDWISE_FAULTS_FAKETIME_SHIM`` is set, before the worker runs).

With ``DONT_FAKE_MONOTONIC=1`` (the wall clock jumps, CLOCK_MONOTONIC does not), libfaketime's interposed
``clock_nanosleep`` fails every absolute sleep on CLOCK_MONOTONIC with EINVAL, so Python's ``time.sleep`` raises
``OSError: [Errno 22]`` at once — something no real clock jump does. Waiting on an event (a semaphore wait on
CLOCK_MONOTONIC) is not affected, so ``time.sleep`` becomes that. Everything else libfaketime fakes
(``time.time``, ``datetime.now``, SigV4 signing dates, log timestamps) stays faked.
"""

from __future__ import annotations

import threading
import time

__all__ = ["install"]


def install() -> None:
    never = threading.Event()

    def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        never.wait(seconds)

    time.sleep = sleep
