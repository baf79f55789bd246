"""Lifecycle: the shard-consumer state machine."""
