"""mincap.results.markdown: the report (studies/RESULTS.md) from summary JSON files."""

import json
from pathlib import Path

from mincap.cli import main

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def test_report_table_matches_the_summaries(fakes, run_plot):
    tmp, paths = fakes
    md = tmp / "RESULTS.md"
    run_plot(tmp, paths, "ladder", "--report", str(md))
    text = md.read_text()
    assert "![prequential estimate vs smallest network](fig/ladder.png)" in text
    assert "![Pareto fronts](fig/ladder-pareto.png)" in text
    assert "test box, 2 cores" in text
    rows = [line for line in text.splitlines() if line.startswith("| mnist")]
    assert len(rows) == 2
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.strip().strip("|").split("|")] for r in rows}
    m, k2 = cells["mnist"], cells["mnist-k2"]
    # dataset, asker, pixels, compressed, labels, prequential, prequential-switch, target, spec, bits,
    # two-part, params, val, test, other seeds, trials, cpu, wall, budget
    assert m[1:8] == ["190.8", "-", "-", "199,192", "7,163", "4,100", "99%"]
    assert m[9:17] == ["14,000", "19,500", "2,668", "99.12%", "99.07%", "2 of 3 (98.96–99.10%, 13,800–14,600 bits)",
                       "60 (59)", "30.0 min"]
    assert k2[1:8] == ["176.4", "-", "-", "12,627", "150", "-", "99%"]
    assert k2[9:17] == ["900", "-", "310", "99.85%", "99.91%", "-", "40 (39)", "10.0 min"]
    assert m[8] == "`conv 6x3/p2 12x3/p2 16x3, gap, bn; bits 4/3/4/5`"
    assert "mnist-k2** (target 99%): 900 bits, 0.0713× the labels figure" in text


def test_report_keeps_the_conclusions(fakes, run_plot):
    tmp, paths = fakes
    md = tmp / "RESULTS.md"
    run_plot(tmp, paths, "ladder", "--report", str(md))
    text = md.read_text()
    mine = "<!-- conclusions:begin -->\nThe networks are small.\n<!-- conclusions:end -->"
    start, end = text.index("<!-- conclusions:begin -->"), text.index("<!-- conclusions:end -->")
    md.write_text(text[:start] + mine + text[end + len("<!-- conclusions:end -->"):])
    run_plot(tmp, paths, "ladder", "--report", str(md))
    assert mine in md.read_text()


def test_budget_from_the_study_file_beside_the_summary(fakes, run_plot):
    tmp, paths = fakes
    (paths[0].parent / "mnist.toml").write_text(
        '[study]\nname = "x"\ndataset = "mnist"\n[budget]\ntrials = 60\ntimeout_s = 1800\n')
    md = tmp / "R.md"
    run_plot(tmp, paths, "ladder", "--report", str(md))
    row = next(line for line in md.read_text().splitlines() if line.startswith("| mnist |"))
    assert row.rstrip(" |").endswith("60 trials / 30.0 min")


def test_committed_results_regenerate_from_the_committed_summaries(tmp_path):
    """studies/RESULTS.md's tables are what `mincap plot --from-json` makes of the committed summaries."""
    committed = (STUDIES / "RESULTS.md").read_text()
    md = tmp_path / "RESULTS.md"
    rc = main(["plot", "--from-json", str(STUDIES), "--from-json", str(STUDIES / "ladder3"), "--no-compute",
               "--estimator", "prequential-switch", "--artifacts", str(STUDIES / "artifacts"),
               "-o", str(tmp_path / "ladder.png"), "--report", str(md)])
    assert rc == 0

    def tables(text):
        return text[text.index("## Every rung"):text.index("## Conclusions")]

    assert tables(md.read_text()) == tables(committed)
    assert (tmp_path / "ladder.png").stat().st_size > 10_000


def test_each_machine_listed_once(fakes, run_plot):
    """A summary resumed on another machine build records "a; b"; the report lists each machine once."""
    tmp, paths = fakes
    s = json.loads(paths[0].read_text())
    s["machine"] = "test box, 2 cores; other box"
    paths[0].write_text(json.dumps(s))
    md = tmp / "RESULTS.md"
    run_plot(tmp, paths, "ladder", "--report", str(md))
    line = next(x for x in md.read_text().splitlines() if x.startswith("- **Machine**"))
    assert line == "- **Machine**: other box; test box, 2 cores (recorded when the summaries were written)."
