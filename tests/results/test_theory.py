"""Issue 17's results: capacity and locality data, their figures, the report section, the study files."""

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from mincap.cli import main
from mincap.config.study import load_study_file
from mincap.results.capacity import capacity_info, capacity_rows, fano_bound_bits, loglog_slope
from mincap.results.locality import cell_of, locality_info
from mincap.results.summary import smallest_by_depth
from mincap.results.theory import theory_section
from mincap.search.storage import open_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"
MLP = json.dumps({"family": "mlp", "hidden": [12]})
CNN2 = json.dumps({"family": "cnn", "convs": [[6, 3, 1, 2, 1], [12, 3, 1, 2, 1]], "batch_norm": True, "head": "gap"})


def _row(trial, bits, acc, params, spec=MLP):
    return {"trial": trial, "artifact_bits": bits, "val_acc": acc, "n_params": params, "n_nonzero": params,
            "nominal_bits": 3 * params, "bits_per_layer": [3, 3], "family": json.loads(spec)["family"],
            "spec": spec, "mackay_bits": 2 * params, "train_time_s": 5.0}


def _random(n, bits, acc, params):
    chosen = dict(_row(4, bits, acc, params), test_acc=0.1)
    return {"study": f"capacity-random-{n}", "dataset": f"mnist-random-{n}", "target": 0.9, "n_trials": 30,
            "states": {"COMPLETE": {"trials": 30, "time_s": 3000.0}}, "search_wall_s": 3500.0,
            "pareto_front": [_row(2, bits // 3, 0.5, params // 3), chosen], "chosen": chosen,
            "config": {"budget_timeout_s": 3600.0, "budget_trials": 2000, "n_val": n, "target": 0.9}}


def _cell(family, inp, bits, depth_rows):
    spec = MLP if family == "mlp" else CNN2
    chosen = dict(_row(7, bits, 0.976, bits // 4, spec), test_acc=0.977)
    return {"study": f"locality-{family}-{inp}", "dataset": "mnist" if inp == "mnist" else "mnist-permuted",
            "target": 0.975, "n_trials": 50, "states": {"COMPLETE": {"trials": 40, "time_s": 3000.0}},
            "search_wall_s": 3600.0, "pareto_front": [chosen], "chosen": chosen,
            "config": {"budget_timeout_s": 3600.0, "budget_trials": 500, "n_val": 5000, "target": 0.975},
            "smallest_by_depth": [{"family": family, "depth": d, "n_complete": 10, "best_val_acc": 0.98,
                                   "smallest": _row(1, b, 0.976, b // 4, spec) if b else None}
                                  for d, b in depth_rows]}


RANDOM = [_random(256, 4000, 0.95, 1000), _random(1024, 16000, 0.92, 4000)]
CELLS = [_cell("mlp", "mnist", 200_000, [(1, 200_000), (2, 260_000)]),
         _cell("mlp", "permuted", 204_000, [(1, 204_000), (2, None)]),
         _cell("cnn", "mnist", 20_000, [(2, 30_000), (3, 20_000), (4, 24_000)]),
         _cell("cnn", "permuted", 300_000, [(2, 300_000)])]


def test_loglog_slope():
    assert loglog_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert loglog_slope([2, 8], [5, 10]) == pytest.approx(0.5)
    assert loglog_slope([5], [5]) is None and loglog_slope([5, 5], [1, 2]) is None


def test_capacity_rows_and_slopes(summaries):
    ladder = list(summaries.values())  # the shared fake ladder (tests/results/conftest.py), a fresh copy
    info = capacity_info(RANDOM + ladder, ladder)  # ladder rungs among the random ones are ignored there
    rows = info.rows
    assert [w["n"] for w in rows] == [256, 1024]
    w = rows[0]
    assert w["fano_bits"] == pytest.approx(fano_bound_bits(256, 0.95)) and w["bits_per_param"] == 4.0
    assert w["mackay_weights"] == pytest.approx(128 * math.log2(10)) and w["label_bits"] == pytest.approx(256 * math.log2(10))
    assert w["params_per_mackay"] == pytest.approx(1000 / (128 * math.log2(10)))
    assert info.slope_random == pytest.approx(1.0)  # 4x the labels, 4x the bits
    # the ladder's: mnist 14,000 bits at 7,163 prequential bits, mnist-k2 900 at 150
    assert info.slope_ladder == pytest.approx(math.log(14000 / 900) / math.log(7163 / 150))
    assert sorted(p[0] for p in info.ladder_points) == ["mnist", "mnist-k2"]
    assert capacity_rows(ladder) == []


def test_locality_cells_ratios_depth(summaries):
    info = locality_info(CELLS + list(summaries.values()))
    assert set(info.cells) == {("mlp", "mnist"), ("mlp", "permuted"), ("cnn", "mnist"), ("cnn", "permuted")}
    assert info.target == 0.975
    assert info.ratios["mlp permuted / mnist"] == pytest.approx(1.02)
    assert info.ratios["cnn permuted / mnist"] == pytest.approx(15.0)
    assert info.ratios["cnn / mlp on mnist"] == pytest.approx(0.1)
    assert [(d["family"], d["input"], d["depth"]) for d in info.depth][:3] == [
        ("mlp", "mnist", 1), ("mlp", "mnist", 2), ("mlp", "permuted", 1)]
    assert cell_of({"study": "locality-mlp-permuted", "dataset": "mnist"}) is None  # name and data disagree
    odd = copy.deepcopy(CELLS)
    odd[0]["target"] = 0.98
    assert locality_info(odd).target is None and locality_info(odd).targets == [0.975, 0.98]


def _part(family, inp, part, bits, depth_rows, *, replicates=None):
    """A summary of one study of an issue-31 cell (studies/locality3/: several studies a cell)."""
    s = _cell(family, inp, bits or 1, depth_rows)
    s["study"] = f"locality3-{family}-{inp}-{part}"
    s["config"]["budget_timeout_s"] = 1200.0
    if bits is None:
        s["chosen"] = None
        s["pareto_front"] = [_row(3, 90_000, 0.95, 20_000)]
    elif replicates:
        s["chosen"]["replicates"] = {"k": len(replicates), "val_acc": replicates,
                                     "n_reach": sum(a >= 0.975 for a in replicates)}
    return s


def test_a_cell_of_several_studies_is_merged_by_the_selection_rule():
    parts = [_part("mlp", "mnist", "d1", 200_000, [(1, 200_000)]),
             _part("mlp", "mnist", "d2", 150_000, [(2, 150_000)], replicates=[0.976, 0.972, 0.977]),
             _part("mlp", "mnist", "d3", None, [(3, None)]),
             _part("cnn", "mnist", "gap", 20_000, [(2, 30_000), (3, 20_000)]),
             _part("cnn", "mnist", "flatten", 40_000, [(2, 25_000), (3, None)])]
    parts[3]["oneshot"] = {"supernet_train_s": 600.0}  # a one-shot study: supernet training is search time
    info = locality_info(parts)
    mlp, cnn = info.cells[("mlp", "mnist")], info.cells[("cnn", "mnist")]
    assert mlp["study"] == "locality3-mlp-mnist-d2" and mlp["artifact_bits"] == 150_000  # smallest over the three
    assert mlp["n_trials"] == 150 and mlp["budget_timeout_s"] == 3600.0
    assert mlp["replicates"]["n_reach"] == 2
    # the union of the fronts, filtered: d3's 90,000-bit point at 95% stays, nothing it dominates does
    assert mlp["front"] == [(90_000, 0.95), (150_000, 0.976)]  # d1's 200,000 bits at 97.6% is dominated
    assert cnn["artifact_bits"] == 20_000
    assert cnn["wall_s"] == 3600.0 + 600.0 + 3600.0 and mlp["wall_s"] == 3 * 3600.0
    depth = {(d["family"], d["depth"]): d for d in info.depth}
    assert depth[("cnn", 2)]["n_complete"] == 20 and depth[("cnn", 2)]["artifact_bits"] == 25_000  # both heads' depth 2
    assert depth[("cnn", 3)]["artifact_bits"] == 20_000 and depth[("mlp", 3)]["artifact_bits"] is None
    assert ("mlp", "permuted") not in info.cells


def test_the_section_reads_locality3_only_once_all_of_it_has_run(tmp_path, summaries):
    ladder = [dict(s, source=str(tmp_path / "ladder" / f"{k}.summary.json")) for k, s in summaries.items()]
    for s in CELLS:
        _write(tmp_path / "locality", s["study"].removeprefix("locality-"), s)
    new = tmp_path / "locality3"
    new.mkdir()
    for stem in ("mlp-mnist-d1", "mlp-mnist-d2"):
        (new / f"{stem}.toml").write_text(f'[study]\nname = "locality3-{stem}"\n')
    text = "\n".join(theory_section(tmp_path / "RESULTS.md", ladder))
    assert "200,000" in text  # locality3 has no summary yet: issue 17's cells still
    _write(new, "mlp-mnist-d1", _part("mlp", "mnist", "d1", 123_000, [(1, 123_000)], replicates=[0.98, 0.97, 0.976]))
    text = "\n".join(theory_section(tmp_path / "RESULTS.md", ladder))
    assert "200,000" in text and "123,000" not in text  # one of two: still issue 17's, never a mix
    _write(new, "mlp-mnist-d2", _part("mlp", "mnist", "d2", 150_000, [(2, 150_000)]))
    text = "\n".join(theory_section(tmp_path / "RESULTS.md", ladder))
    assert "123,000" in text and "200,000" not in text and "| mlp / permuted | - | - | not run |" in text
    assert "mlp / mnist: 2 of 3 (98.00%, 97.00%, 97.60%)" in text


def _trial(number, bits, acc, spec, state="COMPLETE"):
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), values=[bits, acc],
                           user_attrs={"artifact_bits": bits, "val_acc": acc, "spec": spec, "n_params": bits // 4})


def test_smallest_by_depth_looks_past_the_front():
    mlp2 = json.dumps({"family": "mlp", "hidden": [8, 8]})
    trials = [_trial(0, 1000, 0.99, MLP), _trial(1, 3000, 0.98, mlp2), _trial(2, 2000, 0.97, mlp2),
              _trial(3, 500, 0.90, MLP), _trial(4, 800, 0.95, CNN2)]
    out = {(d["family"], d["depth"]): d for d in smallest_by_depth(trials, 0.975)}
    assert out[("mlp", 1)]["smallest"]["trial"] == 0 and out[("mlp", 1)]["n_complete"] == 2
    assert out[("mlp", 2)]["smallest"]["trial"] == 1  # dominated by trial 0, still the depth-2 answer
    assert out[("cnn", 2)]["smallest"] is None and out[("cnn", 2)]["best_val_acc"] == 0.95


def _write(folder: Path, name: str, s: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.summary.json").write_text(json.dumps(s))


def test_theory_section_and_figures(tmp_path, summaries):
    ladder = [dict(s, source=str(tmp_path / "ladder" / f"{k}.summary.json")) for k, s in summaries.items()]
    assert theory_section(tmp_path / "RESULTS.md", ladder) == []  # nothing there: no section
    (tmp_path / "capacity").mkdir()
    (tmp_path / "capacity" / "mnist-random-512.toml").write_text("")
    assert theory_section(tmp_path / "RESULTS.md", ladder) == []  # study files alone: no section yet
    for s in RANDOM:
        _write(tmp_path / "capacity", s["dataset"], s)
    for s in CELLS:
        _write(tmp_path / "locality", s["study"].removeprefix("locality-"), s)
    text = "\n".join(theory_section(tmp_path / "RESULTS.md", ladder))
    assert "![random labels: size vs Fano's bound and MacKay's prediction](capacity.png)" in text
    assert "**Validation is the training set itself**" in text
    row = next(line for line in text.splitlines() if line.startswith("| 256 |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert cells[4:12] == ["4,000", "95.00%", f"{round(fano_bound_bits(256, 0.95)):,}",
                           f"{4000 / fano_bound_bits(256, 0.95):.2f}", "1,000", "4.00", "425", "2.35"]
    assert cells[-1] == "1.00 h / 2000 trials"
    assert "random labels 1.00; the real-label ladder (X = prequential)" in text
    assert "Not run yet (no summary): `capacity/mnist-random-512.toml`" in text
    assert "| cnn / permuted | mnist-permuted | 97.5% |" in text and "cnn permuted / mnist: 15.00×" in text
    assert "| mlp | permuted | 2 | 10 | 98.00% | none |" in text
    for fig in ("capacity.png", "locality.png"):
        assert (tmp_path / fig).stat().st_size > 10_000


def test_locality_figure_depth_labels_do_not_overlap():
    """Three depths of nearly one size in one cell, one of them the size of the bar: their labels'
    boxes stay apart from one another and from the bar's caption."""
    from matplotlib.text import Text

    from mincap.results.theory_figures import draw_locality

    cells = {("cnn", "mnist"): {"artifact_bits": 11_000, "dataset": "mnist", "front": [(11_000, 0.98)]}}
    depth = [{"family": "cnn", "input": "mnist", "depth": k, "artifact_bits": b}
             for k, b in ((2, 11_200), (3, 11_000), (4, 11_400))]
    fig = draw_locality(SimpleNamespace(cells=cells, depth=depth, targets=[0.975], target=0.975))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # the text's own box (an Annotation's extent also spans its leader line, which may cross others)
    texts = fig.axes[1].texts
    depths = [Text.get_window_extent(t, renderer) for t in texts if t.get_text().startswith("depth")]
    caption = [Text.get_window_extent(t, renderer) for t in texts if t.get_text().endswith("bit")]
    assert len(depths) == 3 and len(caption) == 1
    boxes = depths + caption
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_plot_report_places_the_section_before_the_conclusions(fakes, run_plot):
    tmp, paths = fakes
    for s in RANDOM:
        _write(tmp / "capacity", s["dataset"], s)
    md = tmp / "RESULTS.md"
    run_plot(tmp, paths, "ladder", "--report", str(md))
    text = md.read_text()
    assert text.index("## Every rung") < text.index("## Theory: memorizing random labels") < text.index("## Conclusions")
    assert "### Locality" not in text and (tmp / "capacity.png").is_file()


# --- the study files -----------------------------------------------------------------------


def test_every_study_file_parses():
    files = sorted(STUDIES.rglob("*.toml"))
    assert len(files) >= 9 + 8
    for f in files:
        load_study_file(f)


def test_capacity_study_files():  # one stated budget for all five rungs: 30 minutes each
    for n in (256, 512, 1024, 2048, 4096):
        cfg = load_study_file(STUDIES / "capacity" / f"mnist-random-{n}.toml")
        assert cfg.study.dataset == f"mnist-random-{n}" and cfg.data.n_val == n and cfg.data.limit == 0
        assert cfg.budget.timeout_s == 1800 and not cfg.early_stop.enabled and not cfg.fidelity.enabled
        assert cfg.space.augment == (0, 0) and "TRAINING SET ITSELF" in Path(cfg.path).read_text()


def test_locality_cells_share_target_budget_and_space():
    cfg = {(f, d): load_study_file(STUDIES / "locality" / f"{f}-{d}.toml")
           for f in ("mlp", "cnn") for d in ("mnist", "permuted")}
    assert {c.study.target for c in cfg.values()} == {0.975}
    assert {(c.budget.timeout_s, c.budget.trials) for c in cfg.values()} == {(3600, 500)}
    for (f, d), c in cfg.items():
        assert cell_of({"study": c.study.name, "dataset": c.study.dataset}) == (f, d)
        assert c.space.families == (f,) and c.space.augment == (0, 0)
    for f in ("mlp", "cnn"):  # a family's two files differ in name and dataset only
        a, b = cfg[(f, "mnist")], cfg[(f, "permuted")]
        assert replace(b, study=a.study, path="") == replace(a, path="")
    assert cfg[("mlp", "mnist")].space.mlp_depth == (1, 2) and cfg[("cnn", "mnist")].space.conv_depth == (2, 4)


def test_locality3_cells_split_one_budget_and_fix_depth_or_head():
    files = sorted((STUDIES / "locality3").glob("*.toml"))
    cfg = {f.stem: load_study_file(f) for f in files}
    assert len(cfg) == 10 and {c.study.target for c in cfg.values()} == {0.975}
    budget: dict = {}
    for stem, c in cfg.items():
        fam, inp, part = stem.split("-")
        assert cell_of({"study": c.study.name, "dataset": c.study.dataset}) == (fam, inp)
        budget[(fam, inp)] = budget.get((fam, inp), 0) + c.budget.timeout_s
        if fam == "mlp":  # one depth a study
            assert c.space.families == ("mlp",) and c.space.mlp_depth == (int(part[1:]),) * 2
            assert c.space.augment == (0, 0) and not c.oneshot.enabled
        else:  # one head a one-shot study, conv blocks 2..4
            assert c.oneshot.enabled and c.oneshot.head == part and c.oneshot.depth == (2, 4)
            assert c.oneshot.augment_shift == 0 and c.seed_recipe.augment == 0
    assert set(budget.values()) == {3600}  # one hour of one core a cell
    for stem, c in cfg.items():  # a file's twin on the other input differs in name and dataset only
        if "-mnist-" in stem:
            twin = cfg[stem.replace("-mnist-", "-permuted-")]
            assert replace(twin, study=c.study, path="") == replace(c, path="")
            assert twin.study.dataset == "mnist-permuted"


def test_summary_save_writes_the_summary_beside_the_study(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    f = tmp_path / "mnist-random-256.toml"
    f.write_text((STUDIES / "capacity" / "mnist-random-256.toml").read_text())
    study = open_study(load_study_file(f))
    for bits, acc in ((9000, 0.95), (3000, 0.6)):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[float(bits), acc],
            user_attrs={"artifact_bits": bits, "val_acc": acc, "n_params": bits // 3, "n_nonzero": bits // 3,
                        "spec": MLP}))
    assert main(["summary", str(f), "--save", "--no-test"]) == 0
    err = capsys.readouterr().err
    assert "memorization set: validation is the training set itself" in err and "wrote" in err
    s = json.loads((tmp_path / "mnist-random-256.summary.json").read_text())
    assert s["chosen"]["artifact_bits"] == 9000 and s["config"]["n_val"] == 256 and s["machine"]
    assert "memorization set" in s["memorization"] and s["smallest_by_depth"][0]["smallest"]["trial"] == 0


def test_summary_save_without_a_study_file_is_refused_before_any_work(tmp_path, capsys):
    from mincap.cli import main

    url = f"sqlite:///{tmp_path / 'absent.db'}"  # never opened: the refusal comes first
    assert main(["summary", "--storage", url, "--study", "x", "--save", "--no-test"]) == 2
    assert "--save needs the study file" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()
