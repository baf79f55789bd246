"""``amazon_kclpy.v2`` as shardwise provides it (see :mod:`shardwise.kclpy.compat`)."""
