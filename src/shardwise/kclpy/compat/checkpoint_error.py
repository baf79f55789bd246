"""``amazon_kclpy.checkpoint_error`` as shardwise provides it when amazon-kclpy is not installed."""

from __future__ import annotations

from shardwise.errors import CheckpointError as _ShardwiseCheckpointError

__all__ = ["CheckpointError"]


class CheckpointError(_ShardwiseCheckpointError):
    """A checkpoint failed. ``value`` is the name of the Java exception the MultiLangDaemon would report
    (``ShutdownException``, ``ThrottlingException``, ``InvalidStateException``,
    ``KinesisClientLibDependencyException``, ``IllegalArgumentException``), as amazon-kclpy's ``CheckpointError``
    has it; ``str()`` is its ``repr``, also as in amazon-kclpy."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value
        self.kcl_name = value

    def __str__(self) -> str:
        return repr(self.value)
