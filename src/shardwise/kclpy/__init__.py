"""Run unmodified amazon-kclpy record processors on shardwise's worker: no Java, no MultiLangDaemon.

* :mod:`shardwise.kclpy.properties` reads the daemon's ``.properties`` file (:mod:`~shardwise.kclpy.syntax`)
  into shardwise's configuration, by the key table of :mod:`~shardwise.kclpy.keys`;
* :mod:`shardwise.kclpy.adapter` wraps a kclpy processor (v1, v2 or v3 API) into a shardwise processor, with
  amazon-kclpy's input objects, checkpointer signature and ``CheckpointError`` names;
* :mod:`shardwise.kclpy.shim` lets ``from amazon_kclpy import kcl`` import without amazon-kclpy installed
  (the stand-in modules are :mod:`shardwise.kclpy.compat`).

``shardwise run --kclpy-properties app.properties --processor MODULE:CLASS`` puts the three together; see
``docs/kclpy.md``.
"""

from shardwise.kclpy.adapter import KclpyCheckpointer, KclpyProcessorAdapter, kclpy_api_version, kclpy_factory
from shardwise.kclpy.errors import CheckpointError, checkpoint_error_class, kcl_error_name
from shardwise.kclpy.properties import IgnoredKey, KclpyProperties, load_properties, map_properties, parse_properties
from shardwise.kclpy.shim import install_amazon_kclpy_shim, real_amazon_kclpy_available

__all__ = [
    "CheckpointError",
    "IgnoredKey",
    "KclpyCheckpointer",
    "KclpyProcessorAdapter",
    "KclpyProperties",
    "checkpoint_error_class",
    "install_amazon_kclpy_shim",
    "kcl_error_name",
    "kclpy_api_version",
    "kclpy_factory",
    "load_properties",
    "map_properties",
    "parse_properties",
    "real_amazon_kclpy_available",
]
