"""Click options and option handling shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import click

from shardwise.config import BackendConfig
from shardwise.errors import ConfigurationError

__all__ = ["BACKEND_OPTIONS", "DB_OPTION", "apply_options", "backend_from_target_options"]

#: ``--db``: the SQLite file of the local backend.
DB_OPTION = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="SHARDWISE_DB",
    help="SQLite database of the local backend. [default: shardwise.db]",
)


def apply_options(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One decorator applying ``options`` so that they show in ``--help`` in list order."""

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


_BACKEND_OPTION_LIST = [
    click.option(
        "--backend",
        type=click.Choice(["local", "aws"]),
        default=None,
        help="local: SQLite file (--db); aws: DynamoDB + Kinesis via boto3. [default: local]",
    ),
    DB_OPTION,
    click.option("--endpoint-url", default=None, help="Endpoint override for both DynamoDB and Kinesis."),
    click.option("--kinesis-endpoint-url", default=None, help="Endpoint override for Kinesis only."),
    click.option("--dynamodb-endpoint-url", default=None, help="Endpoint override for DynamoDB only."),
    click.option("--region", default=None, help="AWS region (default: the boto3 chain)."),
]

#: ``--backend``, ``--db`` and the endpoint and region overrides of ``run`` and ``leases``.
BACKEND_OPTIONS = apply_options(_BACKEND_OPTION_LIST)


def backend_from_target_options(params: Mapping[str, Any], *, local_with_aws: str) -> BackendConfig:
    """The backend given by ``--backend``, ``--db``, ``--region`` and ``--endpoint-url``.

    aws when ``--backend aws``, or when ``--backend`` is not given and ``--region`` or ``--endpoint-url`` is;
    else local (``--db``, by default ``shardwise.db``). ``--backend local`` with ``--region`` or
    ``--endpoint-url`` raises :class:`~shardwise.errors.ConfigurationError` with the message ``local_with_aws``.
    """
    region, endpoint = params.get("region"), params.get("endpoint_url")
    chosen = params.get("backend")
    backend: Literal["local", "aws"] = (
        "aws" if chosen == "aws" or (chosen is None and (region or endpoint)) else "local"
    )
    if backend == "local" and (region or endpoint):
        raise ConfigurationError(local_with_aws)
    return BackendConfig(backend=backend, db=params.get("db") or "shardwise.db", region=region, endpoint_url=endpoint)
