"""``shardwise`` — the command-line interface.

The CLI only parses arguments, calls the library and prints; it is also the one place that configures
logging (the library itself never does), with credentials redacted (:mod:`shardwise.cli.logs`).
"""

from __future__ import annotations

import importlib

import click

from shardwise import __version__
from shardwise.cli.logs import configure_logging

__all__ = ["cli", "main"]


#: Each subcommand's module, imported only when the subcommand runs (or the top-level help lists it): a worker
#: started with ``shardwise run`` does not pay for the demo, the migration tool or the state commands.
SUBCOMMANDS = {
    "demo": "shardwise.cli.demo",
    "run": "shardwise.cli.run",
    "leases": "shardwise.cli.leases",
    "stream": "shardwise.cli.stream",
    "migrate": "shardwise.cli.migrate",
    "features": "shardwise.cli.features",
    "state": "shardwise.cli.state",
}


class LazyGroup(click.Group):
    """A group whose subcommands (named in :data:`SUBCOMMANDS`, each its module's attribute of the same name)
    are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = SUBCOMMANDS.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(module), cmd_name)
        assert isinstance(command, click.Command), f"{module}.{cmd_name} is not a click command"
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


def main() -> None:
    cli()
