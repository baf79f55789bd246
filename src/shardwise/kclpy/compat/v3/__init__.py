"""``amazon_kclpy.v3`` as shardwise provides it (see :mod:`shardwise.kclpy.compat`)."""
