"""Checkpoint errors as amazon-kclpy reports them: the class a processor catches and the Java exception names."""

from __future__ import annotations

import importlib

from shardwise.errors import (
    CheckpointError as ShardwiseCheckpointError,
)
from shardwise.errors import (
    DependencyError,
    InvalidStateError,
    ThrottlingError,
)
from shardwise.kclpy.compat.checkpoint_error import CheckpointError

__all__ = ["CheckpointError", "checkpoint_error_class", "kcl_error_name"]


def checkpoint_error_class() -> type[Exception]:
    """The ``CheckpointError`` class a kclpy processor catches (``kcl.CheckpointError``): amazon-kclpy's own when
    the package is importable, else shardwise's compatible :class:`CheckpointError` (which is also what the
    ``amazon_kclpy`` shim exports)."""
    for module_name in ("amazon_kclpy.checkpoint_error", "amazon_kclpy.kcl"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, "CheckpointError", None)
        if isinstance(found, type) and issubclass(found, Exception):
            return found
    return CheckpointError


def kcl_error_name(error: Exception) -> str:
    """The simple name of the Java exception the MultiLangDaemon reports for this shardwise error.

    KCL's checkpointer throws ``IllegalArgumentException`` (a position outside what was delivered),
    ``ShutdownException`` (the lease is gone), ``ThrottlingException``, ``KinesisClientLibDependencyException``
    (any other DynamoDB fault) and ``InvalidStateException`` (e.g. the lease table is missing).
    """
    if isinstance(error, ShardwiseCheckpointError):
        return error.kcl_name
    if isinstance(error, ThrottlingError):
        return "ThrottlingException"
    if isinstance(error, DependencyError):
        return "KinesisClientLibDependencyException"
    if isinstance(error, InvalidStateError):
        return "InvalidStateException"
    return "InvalidStateException"
