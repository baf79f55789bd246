"""Helpers shared by the benchmarks: stand-in servers, timing, and recording results in RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import standins  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"

for _key, _value in standins.FAKE_AWS_ENV.items():
    os.environ.setdefault(_key, _value)

__all__ = ["ROOT", "record_results", "standins", "timed_rate"]


def timed_rate(operation: Callable[[], int], *, min_seconds: float) -> tuple[float, int, float]:
    """Call ``operation`` (which returns how many units it did) until ``min_seconds`` pass; return
    (units per second, units, seconds)."""
    units = 0
    start = time.perf_counter()
    while True:
        units += operation()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return units / elapsed, units, elapsed


def record_results(section: str, command: str, lines: list[str]) -> None:
    """Replace (or add) ``## section`` in RESULTS.md with the command, the machine and the result lines."""
    header = f"## {section}"
    body = "\n".join(
        [
            header,
            "",
            f"Command: `{command}`  ",
            f"Run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
            "",
            *lines,
            "",
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(header)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _m: body + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text.rstrip("\n") + "\n")
    print(body)
