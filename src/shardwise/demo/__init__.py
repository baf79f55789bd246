"""``shardwise demo``: fleets of worker processes on the embedded default, with failures, verified.

* :mod:`~shardwise.demo.fleet`: the classic demo — every record processed at least once through a kill and a
  split (:class:`DemoProcessor` records each delivery before it checkpoints).
* :mod:`~shardwise.demo.stateful`: ``--stateful`` — :class:`CountingProcessor` (:mod:`~shardwise.demo.counting`)
  counts records per key in its state store through kills, a split and a merge; the counts must be exact.
"""

from shardwise.demo.counting import CountingProcessor
from shardwise.demo.fleet import DemoOptions, DemoProcessor, DemoSummary, DemoWorkers, run_demo
from shardwise.demo.stateful import StatefulDemoOptions, StatefulDemoSummary, run_stateful_demo

__all__ = [
    "CountingProcessor",
    "DemoOptions",
    "DemoProcessor",
    "DemoSummary",
    "DemoWorkers",
    "StatefulDemoOptions",
    "StatefulDemoSummary",
    "run_demo",
    "run_stateful_demo",
]
