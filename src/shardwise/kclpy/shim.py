"""Make ``import amazon_kclpy…`` work for an unmodified kclpy processor module when amazon-kclpy is not installed.

:func:`install_amazon_kclpy_shim` registers :mod:`shardwise.kclpy.compat` and its modules in ``sys.modules``
under their ``amazon_kclpy`` names — only when the real package cannot be imported, so an installed
amazon-kclpy always wins. ``shardwise run --kclpy-properties`` calls it before importing the processor.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

__all__ = ["SHIM_MODULES", "install_amazon_kclpy_shim", "is_shim", "real_amazon_kclpy_available"]

#: ``amazon_kclpy`` module name → the shardwise module standing in for it.
SHIM_MODULES = {
    "amazon_kclpy": "shardwise.kclpy.compat",
    "amazon_kclpy.checkpoint_error": "shardwise.kclpy.compat.checkpoint_error",
    "amazon_kclpy.messages": "shardwise.kclpy.compat.messages",
    "amazon_kclpy.v2": "shardwise.kclpy.compat.v2",
    "amazon_kclpy.v2.processor": "shardwise.kclpy.compat.v2.processor",
    "amazon_kclpy.v3": "shardwise.kclpy.compat.v3",
    "amazon_kclpy.v3.processor": "shardwise.kclpy.compat.v3.processor",
    "amazon_kclpy.kcl": "shardwise.kclpy.compat.kcl",
}


def is_shim() -> bool:
    """Whether ``amazon_kclpy`` in ``sys.modules`` is shardwise's stand-in."""
    module = sys.modules.get("amazon_kclpy")
    return module is not None and module.__name__ == SHIM_MODULES["amazon_kclpy"]


def real_amazon_kclpy_available() -> bool:
    """Whether the real amazon-kclpy package can be imported (the shim does not count)."""
    if is_shim():
        return False
    if "amazon_kclpy" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("amazon_kclpy") is not None
    except (ImportError, ValueError):
        return False


def install_amazon_kclpy_shim() -> bool:
    """Register the stand-in modules unless the real amazon-kclpy is importable. Returns whether the stand-in
    is (now) in place. Idempotent."""
    if is_shim():
        return True
    if real_amazon_kclpy_available():
        return False
    for alias, target in SHIM_MODULES.items():
        sys.modules[alias] = importlib.import_module(target)
    return True
