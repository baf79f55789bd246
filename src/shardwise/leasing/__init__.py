"""Lease management around the lease store: the renewer (held leases), the 2.x taker, the 3.x leader's assigner,
owner-index discovery and shard sync. Each is a thin I/O shell around a pure decision in ``shardwise.assignment``
or ``shardwise.leasing.shard_sync``."""
