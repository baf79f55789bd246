"""``python -m shardwise`` runs the CLI."""

from shardwise.cli.main import main

main()
