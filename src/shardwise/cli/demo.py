"""``shardwise demo`` — the fleet demo on the embedded default (no AWS)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from shardwise.cli._output import echo_table
from shardwise.demo import DemoOptions, StatefulDemoOptions, StatefulDemoSummary, run_demo, run_stateful_demo
from shardwise.errors import ShardwiseError

__all__ = ["demo"]


@click.command()
@click.option("--shards", type=click.IntRange(min=2), default=8, show_default=True, help="(--stateful: at least 4)")
@click.option("--records", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="Worker processes (separate OS processes).",
)
@click.option(
    "--produce-seconds",
    type=click.FloatRange(min=1),
    default=40.0,
    show_default=True,
    help="How long the producer spreads the records over.",
)
@click.option(
    "--failover-time-ms",
    type=click.IntRange(min=1000),
    default=4000,
    show_default=True,
    help="Lease duration used by the demo's workers (KCL's default is 10000).",
)
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's databases and worker logs here (default: a temporary directory).",
)
@click.option(
    "--assignment",
    type=click.Choice(["lease-count-2x", "utilization-3x"]),
    default="lease-count-2x",
    show_default=True,
    help="Lease assignment generation; with utilization-3x the killed worker is the leader.",
)
@click.option(
    "--stateful",
    is_flag=True,
    help="Run the counting processor (per-key counts in a state store) through two kills (replacements start with "
    "an empty state directory), a split and a merge; print expected vs counted per key.",
)
@click.option(
    "--keys",
    type=click.IntRange(min=1),
    default=24,
    show_default=True,
    help="Partition keys the stateful demo counts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def demo(
    shards: int,
    records: int,
    workers: int,
    produce_seconds: float,
    failover_time_ms: int,
    workdir: Path | None,
    assignment: str,
    stateful: bool,
    keys: int,
    as_json: bool,
) -> None:
    """Run a fleet of worker processes on a local stream; kill one, reshard, and verify nothing was lost.

    Exit status 0 only if every record produced was processed. With --stateful: exit status 0 only if every
    key's count equals the records produced for it.
    """
    progress_to_tty = sys.stderr.isatty()

    def progress(line: str) -> None:
        if progress_to_tty:
            click.echo(f"\r\x1b[2K{line}", err=True, nl=False)
        elif not line.startswith("produced"):
            click.echo(line, err=True)

    if stateful:
        with tempfile.TemporaryDirectory(prefix="shardwise-demo-") as tmp:
            try:
                result = run_stateful_demo(
                    StatefulDemoOptions(
                        workdir=workdir or Path(tmp),
                        shards=shards,
                        records=records,
                        keys=keys,
                        workers=workers,
                        produce_seconds=produce_seconds,
                        failover_time_ms=failover_time_ms,
                    ),
                    progress,
                )
            except ShardwiseError as exc:
                raise click.ClickException(str(exc)) from exc
        if progress_to_tty:
            click.echo("", err=True)
        _echo_stateful(result, as_json)
        return

    with tempfile.TemporaryDirectory(prefix="shardwise-demo-") as tmp:
        options = DemoOptions(
            workdir=workdir or Path(tmp),
            shards=shards,
            records=records,
            workers=workers,
            produce_seconds=produce_seconds,
            failover_time_ms=failover_time_ms,
            assignment=assignment,
        )
        try:
            summary = run_demo(options, progress)
        except ShardwiseError as exc:
            raise click.ClickException(str(exc)) from exc
    if progress_to_tty:
        click.echo("", err=True)
    data = summary.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"records produced:          {summary.produced}")
        click.echo(f"distinct records processed: {summary.processed_unique}")
        click.echo(f"duplicates:                {summary.duplicates}")
        click.echo(f"records lost:              {summary.lost}")
        click.echo("leases per worker:         " + ", ".join(f"{w}={n}" for w, n in summary.leases_per_worker.items()))
        takeover = "not measured" if summary.takeover_seconds is None else f"{summary.takeover_seconds:.1f} s"
        role = " (the leader)" if assignment == "utilization-3x" else ""
        click.echo(f"takeover of {summary.killed_worker}{role}: {takeover} (failover time {failover_time_ms} ms)")
        click.echo(f"split shard:               {summary.split_shard}")
        click.echo(f"elapsed:                   {summary.elapsed_seconds:.0f} s")
    if summary.lost != 0:
        raise SystemExit(1)


def _echo_stateful(summary: StatefulDemoSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        echo_table(
            ["KEY", "EXPECTED", "COUNTED", ""],
            [
                [key, str(n), str(summary.counted.get(key, 0)), "" if summary.counted.get(key, 0) == n else "MISMATCH"]
                for key, n in sorted(summary.expected.items())
            ],
        )
        click.echo(f"records produced:  {summary.produced}")
        click.echo(f"records counted:   {sum(summary.counted.values())}")
        click.echo(f"killed workers:    {', '.join(summary.killed_workers) or '-'} (replaced with empty state)")
        click.echo(f"split shard:       {summary.split_shard or '-'}")
        click.echo(f"merged shards:     {' + '.join(summary.merged_shards) or '-'}")
        click.echo(f"elapsed:           {summary.elapsed_seconds:.0f} s")
        click.echo("counts: exact" if summary.exact else "counts: NOT exact")
    if not summary.exact:
        raise SystemExit(1)
