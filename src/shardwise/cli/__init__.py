"""The shardwise command-line interface."""
