"""Per-shard state stores whose input position is committed inside the store (Kafka KIP-1035 for Kinesis).

* :mod:`~shardwise.state.port` — the ports: :class:`StateStore` (what a processor sees), :class:`LocalStore`
  (what the framework drives: pending batch, atomic commit of changes + position), :class:`Changelog` (the
  durable copy beyond one machine), and their values (:class:`CommitMeta`, :class:`ChangelogHead`, …).
* :mod:`~shardwise.state.typed` — typed views over a store (JSON, or a serializer the user gives).
* :mod:`~shardwise.state.engines` — the local engines: SQLite (stdlib, default) and RocksDB (``rocksdict``,
  extra ``shardwise[rocksdb]``), and :func:`open_local_store` (format levels, upgrade and downgrade).
"""
