"""Render ``docs/reliability.md`` from the figures the fault scenarios wrote.

    SHARDWISE_FAULTS_RESULTS=/tmp/faults pytest -m faults tests/faults
    python tests/faults/report.py /tmp/faults            # writes docs/reliability.md

Only the standard library: it reads ``<results>/<scenario>.json`` (see ``faults.harness.Figures``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "docs" / "reliability.md"
COMMAND = (
    "SHARDWISE_FAULTS_RESULTS=/tmp/faults pytest -m faults tests/faults && python tests/faults/report.py /tmp/faults"
)

INTRO = """# Reliability under faults: measured

Produced by the fault-injection suite (`tests/faults/`, issue 13) with:

    {command}

Each scenario runs three `shardwise run` worker processes (`--backend aws`) on a stream of 6 shards; they share
a moto server (DynamoDB) and a kinesalite (Kinesis) started for the scenario, and each worker reaches them
through its own fault proxy per service (`tests/support/faultproxy.py`: black-hole, delay, reset, throttling
and 5xx answers at a rate). A producer puts one record per shard every 250 ms, directly to the stream. Every
delivery is written to a ledger before the processor checkpoints (`tests/faults/ledger_processor.py`; it
checkpoints every 15 × failover time, as applications checkpoint periodically), with `time.monotonic()`, which
is system-wide on Linux and immune to wall-clock jumps. Failover time {failover} ms unless stated.

* **lost** — records put and never delivered (asserted 0 in every scenario);
* **duplicates** — deliveries beyond the first of a record (at-least-once: expected after any failover, since
  the new owner starts at the last checkpoint);
* **longest overlap** — the longest time two workers processed the same shard side by side: for each shard, each
  worker's stretch from its first to its last delivery after an `initialize`, intersected with the other
  workers' stretches. Asserted ≤ the failover time where KCL's bound applies (marked ✓ below);
* **time to recover** — from the end of the fault until every record put before it ended was delivered and
  every shard delivered a record put after it.

Re-run one scenario: `SHARDWISE_FAULTS_RESULTS=/tmp/faults pytest tests/faults/test_scenarios.py -k test_a`
(`-k test_b` … `test_g`). Knobs: `SHARDWISE_FAULTS_FAILOVER_MS` (4000), `SHARDWISE_FAULTS_FLAKY_S` (how long
scenario c lasts, 180), `SHARDWISE_FAULTS_CHECKPOINT_MS` (15 × failover).
"""


def _row(fig: dict[str, Any]) -> str:
    overlap = f"{fig['longest_overlap_s']:.1f} s"
    if fig["bound_applies"]:
        overlap += " ✓" if fig["bound_held"] else " ✗ over the bound"
    recovery = "never" if fig["recovery_s"] is None else f"{fig['recovery_s']:.1f} s"
    cells = [
        f"**{fig['scenario']}**: {fig['title']}",
        str(fig["lost"]),
        f"{fig['duplicates']} of {fig['produced']}",
        overlap,
        f"{fig['failover_time_ms']} ms",
        recovery,
        f"{fig['date_utc']}, `{fig['commit'] or '?'}`",
    ]
    return "| " + " | ".join(cells) + " |"


def _injected(fig: dict[str, Any]) -> str:
    totals: dict[str, int] = {}
    for counts in fig["proxy_counts"].values():
        for name, count in counts.items():
            totals[name] = totals.get(name, 0) + count
    return ", ".join(f"{name} {count}" for name, count in sorted(totals.items())) or "none"


HEADER = [
    "| scenario | lost | duplicates | longest overlap | failover time | time to recover | measured |",
    "|---|---|---|---|---|---|---|",
]


def render(
    figures: list[dict[str, Any]],
    command: str,
    code: str = "",
    before: list[dict[str, Any]] | None = None,
    before_code: str = "",
) -> str:
    """The document: the table of ``figures`` (with what code they measured), their notes, and optionally a
    second table of the same scenarios measured on other code (``before``, e.g. before a fix)."""
    failover = figures[0]["failover_time_ms"] if figures else 4000
    lines = [INTRO.format(command=command, failover=failover), ""]
    if code:
        lines += [f"Code measured: {code}", ""]
    lines += [*HEADER, *(_row(fig) for fig in figures)]
    if before:
        lines += ["", "## The same scenarios on the code before the fixes", ""]
        if before_code:
            lines += [f"Code measured: {before_code}", ""]
        lines += [*HEADER, *(_row(fig) for fig in before)]
    lines += ["", "## Notes per scenario", ""]
    for fig in figures:
        notes = "; ".join(fig["notes"]) if fig["notes"] else ""
        lines.append(
            f"* **{fig['scenario']}** (`{fig['test']}`): longest overlap {fig['overlap_detail']}. "
            f"Requests through the proxies: {_injected(fig)}.{' ' + notes + '.' if notes else ''}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the directory the scenarios wrote their JSON figures to")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})")
    parser.add_argument("--command", default=COMMAND, help="the command to cite as having produced the figures")
    parser.add_argument("--code", default="", help="what code was measured, if the commits alone do not say it")
    parser.add_argument("--before", type=Path, default=None, help="figures of the same scenarios on earlier code")
    parser.add_argument("--before-code", default="", help="what code --before measured")
    parser.add_argument("--remark", action="append", default=[], help="a remark to list after the notes (repeatable)")
    args = parser.parse_args(argv)
    files = sorted(args.results.glob("*.json"))
    if not files:
        print(f"report: no figures (*.json) in {args.results}; run the suite with SHARDWISE_FAULTS_RESULTS set")
        return 2
    figures = [json.loads(path.read_text()) for path in files]
    before = [json.loads(path.read_text()) for path in sorted(args.before.glob("*.json"))] if args.before else None
    text = render(figures, args.command, args.code, before, args.before_code)
    if args.remark:
        text += "\n## Remarks\n\n" + "".join(f"* {remark}\n" for remark in args.remark)
    args.out.write_text(text)
    print(f"report: {len(figures)} scenarios -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
