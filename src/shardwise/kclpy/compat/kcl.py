"""``amazon_kclpy.kcl`` as shardwise provides it.

``CheckpointError`` and ``Checkpointer`` are what a processor sees under shardwise; ``RecordProcessorBase`` is
amazon-kclpy's original (``version = 1``) API. ``KCLProcess`` exists so that a module written for the
MultiLangDaemon imports; its ``run()`` explains that shardwise runs the processor itself.
"""

from __future__ import annotations

from typing import Any

from shardwise.errors import ConfigurationError
from shardwise.kclpy.adapter import KclpyCheckpointer as Checkpointer
from shardwise.kclpy.compat import messages
from shardwise.kclpy.compat.checkpoint_error import CheckpointError
from shardwise.kclpy.compat.v2 import processor as v2processor
from shardwise.kclpy.compat.v3 import processor as v3processor

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "KCLProcess",
    "RecordProcessorBase",
    "messages",
    "v2processor",
    "v3processor",
]


class RecordProcessorBase:
    """The v1 record-processor API: ``initialize(shard_id)``, ``process_records(records, checkpointer)``,
    ``shutdown(checkpointer, reason)`` (TERMINATE or ZOMBIE) and ``shutdown_requested(checkpointer)``."""

    version = 1

    def initialize(self, shard_id: str) -> None:
        raise NotImplementedError

    def process_records(self, records: list[Any], checkpointer: Any) -> None:
        raise NotImplementedError

    def shutdown(self, checkpointer: Any, reason: str) -> None:
        raise NotImplementedError

    def shutdown_requested(self, checkpointer: Any) -> None:
        return None


class KCLProcess:
    """amazon-kclpy's stdin/stdout loop. Under shardwise there is no MultiLangDaemon to talk to: ``run()``
    raises, telling how to run the processor instead."""

    def __init__(
        self, record_processor: Any, input_file: Any = None, output_file: Any = None, error_file: Any = None
    ) -> None:
        self.processor = record_processor

    def run(self) -> None:
        name = type(self.processor).__name__
        raise ConfigurationError(
            "KCLProcess.run() speaks the MultiLangDaemon's stdin/stdout protocol, which shardwise does not use: "
            f"run the processor with `shardwise run --kclpy-properties app.properties --processor MODULE:{name}` "
            "(and keep KCLProcess(...).run() under `if __name__ == '__main__':` so that importing the module "
            "does not start it)"
        )
