"""The report renders the figures the scenarios wrote into docs/reliability.md's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faults.report import main, render


def _figures(scenario: str, overlap_s: float, *, bound_applies: bool, recovery_s: float | None) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "title": f"title of {scenario}",
        "failover_time_ms": 4000,
        "produced": 100,
        "lost": 0,
        "duplicates": 7,
        "longest_overlap_s": overlap_s,
        "overlap_detail": "none",
        "recovery_s": recovery_s,
        "bound_applies": bound_applies,
        "bound_held": overlap_s * 1000 <= 4000,
        "notes": ["a note"],
        "proxy_counts": {"w1-ddb": {"forwarded": 10, "throttled": 2}, "w2-ddb": {"forwarded": 5}},
        "test": f"tests/faults/test_scenarios.py::test_{scenario}",
        "date_utc": "2026-12-07 04:00 UTC",
        "commit": "abc1234",
    }


def test_each_scenario_is_a_row_with_the_bound_marked_where_it_applies() -> None:
    text = render(
        [
            _figures("a", 0.5, bound_applies=True, recovery_s=1.25),
            _figures("b", 16.1, bound_applies=True, recovery_s=None),
            _figures("c", 9.0, bound_applies=False, recovery_s=3.0),
        ],
        "the command",
        "main + fixes",
    )
    assert "    the command" in text
    assert "Code measured: main + fixes" in text
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert len(rows) == 3
    assert "| 0 | 7 of 100 | 0.5 s ✓ | 4000 ms | 1.2 s | 2026-12-07 04:00 UTC, `abc1234` |" in rows[0]
    assert "16.1 s ✗ over the bound" in rows[1]
    assert "| never |" in rows[1]
    assert "| 9.0 s | 4000 ms |" in rows[2]
    assert "forwarded 15, throttled 2. a note." in text
    assert "before the fixes" not in text


def test_figures_of_earlier_code_get_a_table_of_their_own() -> None:
    now = [_figures("a", 0.5, bound_applies=True, recovery_s=1.0)]
    before = [_figures("a", 16.1, bound_applies=True, recovery_s=1.0)]
    text = render(now, "cmd", "fixed", before, "main")
    first, second = text.split("## The same scenarios on the code before the fixes")
    assert "0.5 s ✓" in first
    assert "Code measured: main" in second
    assert "16.1 s ✗ over the bound" in second.split("## Notes")[0]


def test_main_writes_the_document_and_refuses_an_empty_results_dir(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 2
    assert not out.exists()
    (results / "a.json").write_text(json.dumps(_figures("a", 0.0, bound_applies=True, recovery_s=0.0)))
    assert main([str(results), "--out", str(out)]) == 0
    assert "| **a**: title of a | 0 |" in out.read_text()
