"""``shardwise`` — the command-line interface.

The CLI only parses arguments, calls the library and prints; it is also the one place that configures
logging (the library itself never does), with credentials redacted (:mod:`shardwise.cli.logs`).
"""

from __future__ import annotations

import click

from shardwise import __version__
from shardwise.cli.demo import demo
from shardwise.cli.features import features
from shardwise.cli.leases import leases
from shardwise.cli.logs import configure_logging
from shardwise.cli.migrate import migrate
from shardwise.cli.run import run
from shardwise.cli.state import state
from shardwise.cli.stream import stream

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shardwise")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output (-v: info, -vv: debug, -vvv: debug with the AWS SDK's wire logs). Credentials are "
    "redacted at every level.",
)
def cli(verbose: int) -> None:
    """Consume sharded streams with a fleet of workers sharing shards through KCL-compatible leases.

    Everything runs on the embedded default (a SQLite file, --db, default ./shardwise.db) with no AWS
    account; DynamoDB and Kinesis are used in production.
    """
    configure_logging(verbose)


cli.add_command(demo)
cli.add_command(run)
cli.add_command(leases)
cli.add_command(stream)
cli.add_command(migrate)
cli.add_command(features)
cli.add_command(state)


def main() -> None:
    cli()
