"""Running a benchmark's child process under py-spy, and summarizing its samples for RESULTS.md."""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

#: Frames every thread's stack starts with: left out of the inclusive table (they would top it at ~100 %).
_PLUMBING = frozenset({"threading.py", "concurrent/futures/thread.py", "<frozen importlib._bootstrap>"})
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH; None when it is not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def py_spy_argv(output: Path, *, rate_hz: int = 200) -> list[str]:
    """The argv prefix that runs a command under py-spy, writing collapsed stacks (only the thread holding the
    GIL: Python CPU)."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy into the venv to profile)")
    return [spy, "record", "--gil", "--format", "raw", "--rate", str(rate_hz), "--output", str(output), "--"]


def _short(frame: str) -> tuple[str, str]:
    """(function, module) of a py-spy frame ``func (path/to/file.py:123)``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    path = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    if path.startswith(".") and "/" in path:
        path = path.split("/", 1)[1]
    return f"{match['func']} ({path})", path


def summarize(raw: Path, *, top: int = 15) -> list[str]:
    """Markdown lines: the samples' top functions by self time and by inclusive time, and self time by
    module (file), each as a share of all samples."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[frames[-1][0]] += count
        by_module[frames[-1][1]] += count
        for name in {name for name, module in frames if module not in _PLUMBING}:
            inclusive[name] += count
    if total == 0:
        return ["(no samples)"]

    def table(title: str, counter: Counter[str]) -> list[str]:
        rows = [f"| {title} | % of CPU samples |", "|---|---:|"]
        rows += [f"| `{name}` | {100 * n / total:.1f} |" for name, n in counter.most_common(top)]
        return rows

    return [
        f"{total:,} samples.",
        "",
        *table("self time: function (file)", self_time),
        "",
        *table("self time by file", by_module),
        "",
        *table("inclusive time: function (file)", inclusive),
    ]
