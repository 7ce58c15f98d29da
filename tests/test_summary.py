import json
from pathlib import Path

from mincap.report import render
from mincap.summary import summary_tables

GOLDEN = Path(__file__).parent / "golden"


def test_summary_tables_golden():
    s = json.loads((GOLDEN / "summary_input.json").read_text())
    assert render(summary_tables(s), width=100) == (GOLDEN / "summary.txt").read_text()


def test_summary_without_chosen_says_so():
    s = json.loads((GOLDEN / "summary_input.json").read_text())
    s["chosen"], s["failures"] = None, []
    text = render(summary_tables(s), width=100)
    assert "no complete trial reached the target" in text and "failed trials" not in text
