"""The ``amazon_kclpy`` package as shardwise provides it, so that an unmodified amazon-kclpy record processor
imports without amazon-kclpy (and its Java jars) installed.

``shardwise run --kclpy-properties`` registers these modules under their ``amazon_kclpy`` names
(:func:`shardwise.kclpy.shim.install_amazon_kclpy_shim`) only when the real package is not importable:

* ``amazon_kclpy.kcl`` — ``RecordProcessorBase`` (the v1 API), ``CheckpointError``, ``Checkpointer``,
  ``KCLProcess`` (whose ``run()`` explains that shardwise runs the processor itself);
* ``amazon_kclpy.v2.processor`` / ``amazon_kclpy.v3.processor`` — ``RecordProcessorBase`` (``version`` 2 / 3);
* ``amazon_kclpy.messages`` — the input objects the processor methods receive, and ``Record``;
* ``amazon_kclpy.checkpoint_error`` — ``CheckpointError``.

The code is shardwise's own; only the names and the behaviour a processor can observe follow amazon-kclpy.
"""
