"""How a worker starts in spite of faults: initialization retried within KCL's bound, with back-off and jitter."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from shardwise.errors import classify
from shardwise.retry import backoff_s
from shardwise.worker.config import WorkerConfig

__all__ = ["initialize_with_retries"]

logger = logging.getLogger(__name__)


def initialize_with_retries(
    initialize: Callable[[], None],
    config: WorkerConfig,
    *,
    rng: random.Random,
    sleep: Callable[[float], None],
    stopping: Callable[[], bool],
    on_attempt: Callable[[int], None] = lambda _attempt: None,
) -> None:
    """Call ``initialize`` until it succeeds. A transient, "not ready" or "missing" error (a table or stream
    being created) is retried up to ``config.max_initialization_attempts`` in all, after a back-off from
    ``initialization_backoff_ms`` doubling up to ``initialization_max_backoff_ms``, with jitter, each failure
    logged as one WARNING line; any other error, the last attempt's, or one during a shutdown is raised.
    ``on_attempt`` is told the number of each attempt before it is made."""
    attempts = config.max_initialization_attempts
    for attempt in range(1, attempts + 1):
        on_attempt(attempt)
        try:
            initialize()
            return
        except Exception as exc:
            fault = classify(exc)
            if not fault.retried_at_start or attempt == attempts or stopping():
                raise
            delay_s = backoff_s(
                attempt, config.initialization_backoff_ms / 1000, config.initialization_max_backoff_ms / 1000, rng
            )
            logger.warning(
                "worker %s: initialization attempt %d of %d failed (%s), retrying in %.1f s: %s",
                config.worker_id,
                attempt,
                attempts,
                fault.value,
                delay_s,
                exc,
            )
            sleep(delay_s)
