"""mincap plot: the ladder figures and the report, from summary JSON files (no study, no data)."""

import copy
import json
import subprocess
import sys

import pytest

from mincap import plot
from mincap.cli import main

SPEC = json.dumps({"family": "cnn", "convs": [[6, 3, 1, 2, 1], [12, 3, 1, 2, 1], [16, 3, 1, 1, 1]],
                   "batch_norm": True, "head": "gap"})


def _summary(dataset, target, bits, n_params, val, test, labels, preq, asker, trials, secs):
    row = {"trial": 3, "artifact_bits": bits, "val_acc": val, "n_params": n_params, "n_nonzero": n_params,
           "nominal_bits": 4 * n_params, "bits_per_layer": [4, 3, 4, 5], "family": "cnn", "spec": SPEC,
           "mackay_bits": 2 * n_params, "train_time_s": 50.0}
    small = dict(row, trial=1, artifact_bits=bits // 2, val_acc=round(target - 0.03, 4))
    return {
        "study": f"ladder-{dataset}", "dataset": dataset, "target": target, "n_trials": trials,
        "states": {"COMPLETE": {"trials": trials - 1, "time_s": secs}, "FAIL": {"trials": 1, "time_s": 2.0}},
        "early_stop_saved_s": 0.0, "pareto_front": [small, row], "chosen": dict(row, test_acc=test),
        "failures": [], "machine": "test box, 2 cores",
        "entropy": {"labels": {"bits_per_example": labels / 60000, "bits_total": labels},
                    "prequential": {"bits_per_example": preq / 60000, "bits_total": preq},
                    "asker": {"bits_per_example": asker, "bits_total": None}},
    }


FAKES = {
    "mnist": _summary("mnist", 0.99, 14000, 2668, 0.9912, 0.9907, 199192.3, 7163.0, 190.79, 60, 1800.0),
    "mnist-k2": _summary("mnist-k2", 0.99, 900, 310, 0.9985, 0.9991, 12626.8, 150.0, 176.44, 40, 600.0),
}


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    # no entropy cache or data can leak in: everything comes from the JSON files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MINCAP_DATA", str(tmp_path / "nodata"))
    paths = []
    for name, s in FAKES.items():
        p = tmp_path / "sums" / f"{name}.summary.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps(s))
        paths.append(p)
    return tmp_path, paths


def _pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def _run(tmp, paths, name, *extra):
    out = tmp / "fig" / f"{name}.png"
    rc = main(["plot", *map(str, paths), "--estimator", "prequential", "--no-compute", "-o", str(out), *extra])
    assert rc == 0
    return out


def test_plot_writes_pngs_that_follow_the_results(fakes):
    tmp, paths = fakes
    a = _run(tmp, paths, "a")
    b = _run(tmp, paths, "b")
    assert a.is_file() and plot.pareto_path(a).is_file() and plot.pareto_path(a).name == "a-pareto.png"
    pa, pb = _pixels(a), _pixels(b)
    assert pa.shape == pb.shape and (pa == pb).all()  # same results, same picture
    assert pa.std() > 0.01  # something is drawn
    changed = copy.deepcopy(FAKES["mnist-k2"])
    changed["chosen"]["artifact_bits"] = 3000  # a result changes
    paths[1].write_text(json.dumps(changed))
    c = _run(tmp, paths, "c")
    pc = _pixels(c)
    assert pc.shape == pa.shape and (pc != pa).any()
    assert (_pixels(plot.pareto_path(c)) != _pixels(plot.pareto_path(a))).any()


def test_plot_svg_and_from_json(fakes):
    tmp, paths = fakes
    out = tmp / "fig" / "ladder.svg"
    rc = main(["plot", "--from-json", str(paths[0].parent), "--no-compute", "-o", str(out)])
    assert rc == 0 and out.read_text().lstrip().startswith("<?xml")
    assert (tmp / "fig" / "ladder-pareto.svg").is_file()


def test_report_table_matches_the_summaries(fakes):
    tmp, paths = fakes
    md = tmp / "RESULTS.md"
    _run(tmp, paths, "ladder", "--report", str(md))
    text = md.read_text()
    assert "![prequential estimate vs smallest network](fig/ladder.png)" in text
    assert "![Pareto fronts](fig/ladder-pareto.png)" in text
    assert "test box, 2 cores" in text
    rows = [line for line in text.splitlines() if line.startswith("| mnist")]
    assert len(rows) == 2
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.strip().strip("|").split("|")] for r in rows}
    m, k2 = cells["mnist"], cells["mnist-k2"]
    # dataset, asker, pixels, compressed, labels, prequential, target, spec, bits, params, val, test, trials, cpu, budget
    assert m[1:7] == ["190.8", "-", "-", "199,192", "7,163", "99%"]
    assert m[8:14] == ["14,000", "2,668", "99.12%", "99.07%", "60 (59)", "30.0 min"]
    assert k2[1:7] == ["176.4", "-", "-", "12,627", "150", "99%"]
    assert k2[8:14] == ["900", "310", "99.85%", "99.91%", "40 (39)", "10.0 min"]
    assert m[7] == "`conv 6x3/p2 12x3/p2 16x3, gap, bn; bits 4/3/4/5`"
    assert "mnist-k2** (target 99%): 900 bits, 0.0713× the labels figure" in text


def test_report_keeps_the_conclusions(fakes):
    tmp, paths = fakes
    md = tmp / "RESULTS.md"
    _run(tmp, paths, "ladder", "--report", str(md))
    text = md.read_text()
    mine = "<!-- conclusions:begin -->\nThe networks are small.\n<!-- conclusions:end -->"
    start, end = text.index("<!-- conclusions:begin -->"), text.index("<!-- conclusions:end -->")
    md.write_text(text[:start] + mine + text[end + len("<!-- conclusions:end -->"):])
    _run(tmp, paths, "ladder", "--report", str(md))
    assert mine in md.read_text()


def test_budget_from_the_study_file_beside_the_summary(fakes):
    tmp, paths = fakes
    (paths[0].parent / "mnist.toml").write_text(
        '[study]\nname = "x"\ndataset = "mnist"\n[budget]\ntrials = 60\ntimeout_s = 1800\n')
    md = tmp / "R.md"
    _run(tmp, paths, "ladder", "--report", str(md))
    row = next(line for line in md.read_text().splitlines() if line.startswith("| mnist |"))
    assert row.rstrip(" |").endswith("60 trials / 30.0 min")


def test_missing_estimate_is_reported_not_placed(fakes, capsys):
    tmp, paths = fakes
    s = copy.deepcopy(FAKES["mnist-k2"])
    del s["entropy"]["prequential"]
    paths[1].write_text(json.dumps(s))
    _run(tmp, paths, "x")
    assert "not placed: mnist-k2 (no prequential estimate" in capsys.readouterr().err


def test_bad_inputs_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    assert main(["plot", str(bad), "-o", str(tmp_path / "a.png")]) == 2
    assert main(["plot", str(bad), "-o", str(tmp_path / "a.pdf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a summary" in err[0] and ".png or .svg" in err[1]


def test_spec_short():
    assert plot.spec_short('{"family":"mlp","hidden":[32]}') == "fc 32"
    assert plot.spec_short(None) == "-"


def test_parser_does_not_import_matplotlib():
    r = subprocess.run(
        [sys.executable, "-c", "import sys, mincap.cli; mincap.cli.build_parser(); "
         "print('matplotlib' in sys.modules, 'torch' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert r.stdout.strip() == "False False"


def test_committed_results_regenerate_from_the_committed_summaries(tmp_path):
    """studies/RESULTS.md's tables are what `mincap plot --from-json` makes of the committed summaries."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "studies"
    committed = (root / "RESULTS.md").read_text()
    md = tmp_path / "RESULTS.md"
    rc = main(["plot", "--from-json", str(root), "--from-json", str(root / "ladder"), "--no-compute",
               "-o", str(tmp_path / "ladder.png"), "--report", str(md)])
    assert rc == 0

    def tables(text):
        return text[text.index("## Every rung"):text.index("## Conclusions")]

    assert tables(md.read_text()) == tables(committed)
    assert (tmp_path / "ladder.png").stat().st_size > 10_000
