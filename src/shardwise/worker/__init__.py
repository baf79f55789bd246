"""The worker runtime: its loops, the dispatcher of shard consumers, the coordination generations it switches
between, and the core that wires them."""

from shardwise.worker.config import AssignmentMode, CoordinationConfig, WorkerConfig, WorkerStats, default_worker_id
from shardwise.worker.worker import Worker

__all__ = [
    "AssignmentMode",
    "CoordinationConfig",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "default_worker_id",
]
