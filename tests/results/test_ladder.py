"""mincap.results.ladder: loading summaries, the entropy X of each rung, and the data of the figures."""

import json
import os

import pytest

from mincap.cli import main
from mincap.entropy import cache as entropy_cache
from mincap.errors import MincapError
from mincap.results import ladder


def test_load_rungs_reads_summaries_in_ladder_order(fakes):
    _, paths = fakes
    rungs = ladder.load_rungs([], [str(paths[0].parent)])
    assert [r["dataset"] for r in rungs] == ["mnist", "mnist-k2"]  # LADDER order, not by name alone
    assert rungs[0]["source"] == str(paths[0]) and rungs[0]["config"] is None


def test_load_rungs_bad_inputs(tmp_path):
    with pytest.raises(MincapError, match="no studies given"):
        ladder.load_rungs([])
    with pytest.raises(MincapError, match="no such file"):
        ladder.load_rungs([str(tmp_path / "nope.json")])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(MincapError, match="not valid JSON"):
        ladder.load_rungs([str(tmp_path / "broken.json")])
    with pytest.raises(MincapError, match="no \\*.summary.json"):
        ladder.load_rungs([], [str(tmp_path)])


def test_bad_inputs_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    assert main(["plot", str(bad), "-o", str(tmp_path / "a.png")]) == 2
    assert main(["plot", str(bad), "-o", str(tmp_path / "a.pdf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a summary" in err[0] and ".png or .svg" in err[1]


def test_entropy_x_from_summary_then_newest_cache_entry(fakes, summaries, tmp_path):
    rung = summaries["mnist-k2"]
    assert ladder.entropy_x(rung, "prequential", compute=False) == 150.0  # bits_total
    assert ladder.entropy_x(rung, "asker", compute=False) == 176.44  # no bits_total: bits per image
    assert ladder.entropy_x(rung, "pixels", compute=False) is None  # not in summary or cache
    cache = tmp_path / "cache" / "mincap" / "mincap-cache" / "entropy"  # fakes' XDG_CACHE_HOME
    cache.mkdir(parents=True)
    for name, bits, mtime in (("old", 1.0, 1_000), ("new", 2.0, 2_000)):
        f = cache / f"mnist-k2-pixels-{name}.json"
        f.write_text(json.dumps({"dataset": "mnist-k2", "estimator": "pixels", "bits_per_example": bits / 10,
                                 "bits_total": bits}))
        os.utime(f, (mtime, mtime))
    assert entropy_cache.newest("mnist-k2", None) == {"pixels": {"bits_per_example": 0.2, "bits_total": 2.0}}
    assert ladder.entropy_x(rung, "pixels", compute=False) == 2.0
    assert rung["entropy"]["pixels"]["bits_total"] == 2.0  # added to the rung for the report


def test_ladder_info_points_skips_and_limits(summaries):
    summaries["mnist-k2"]["chosen"] = None
    info = ladder.ladder_info(list(summaries.values()), "prequential", compute=False)
    assert [(p["dataset"], p["x"], p["y"], p["preq"]) for p in info.points] == [("mnist", 7163.0, 14000.0, 7163.0)]
    # what the search did, from the summary: the most accurate network, networks trained, wall time
    assert info.skipped == {"mnist-k2": "no network reached 99% (best 99.85% validation, 39 networks trained)"}
    assert info.mnist_x == 7163.0
    # X spans at least two decades around the points; Y covers every point and reference with margin
    assert info.xlim[1] / info.xlim[0] >= 100 - 1e-9 and info.xlim[0] < 7163 < info.xlim[1]
    assert info.ylim[0] < ladder.LEARNER["bits"] and max(b for _, b in ladder.ANCHORS) < info.ylim[1]


def test_pareto_info_splits_the_front_at_the_target(summaries):
    info = ladder.pareto_info(summaries["mnist"])
    assert info.front == [(7000, 0.96), (14000, 0.9912)]
    assert info.reached == [(14000, 0.9912)] and info.missed == [(7000, 0.96)]
    assert info.ylim[0] < 0.96 and 0.9912 < info.ylim[1] <= 1.002
    assert info.chosen["artifact_bits"] == 14000
    empty = ladder.pareto_info(dict(summaries["mnist"], pareto_front=[], chosen=None))
    assert empty.front == [] and empty.chosen is None and empty.ylim == (0.99 - 0.05, 1.0)
    # every point above the target (mnist-k2's front at 99.75-99.95%): the target line stays in view
    above = ladder.pareto_info(dict(summaries["mnist"], pareto_front=[
        dict(summaries["mnist"]["pareto_front"][1], val_acc=0.9975)]))
    assert above.ylim[0] < 0.99 < above.ylim[1]


def test_report_rows(summaries):
    (row,) = ladder.report_rows([summaries["mnist"]])
    assert row["entropy"] == {"asker": "190.8", "pixels": "-", "compressed": "-", "labels": "199,192",
                              "prequential": "7,163", "prequential-switch": "4,100"}
    assert row["two_part"] == 19500.0 and row["replicates"]["n_reach"] == 2
    assert (row["artifact_bits"], row["complete"], row["cpu_s"], row["budget"]) == (14000, 59, 1802.0, "-")


# --- issue 16: two-part codes, prequential codes, replicates, files, MacKay's width ---------


def test_points_carry_codes_two_part_and_replicates(summaries, tmp_path, monkeypatch):
    # No entropy cache but the fakes' own figures: a real run leaves estimates beside the data
    # (a switching estimate of mnist-k2 there would place the rung this test expects skipped).
    monkeypatch.setenv("MINCAP_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    info = ladder.ladder_info(list(summaries.values()), "prequential-switch", compute=False)
    (m,) = [p for p in info.points if p["dataset"] == "mnist"]  # mnist-k2 has no switching estimate
    assert info.skipped == {"mnist-k2": "no prequential-switch estimate"}
    assert (m["x"], m["codes"], m["two_part"]) == (4100.0, {"prequential": 7163.0, "prequential-switch": 4100.0},
                                                   19500.0)
    assert m["replicates"] == {"k": 3, "n_reach": 2, "val_acc": [0.991, 0.9896, 0.9902], "bits_lo": 13800.0,
                               "bits_hi": 14600.0}
    assert info.ylim[1] > 19500.0 and info.mackay_width == 4  # the fakes' layers: 4/3/4/5 bits


def _verify_file(tmp_path, **change):
    from tests.results.conftest import VERIFY

    p = tmp_path / f"f{len(list(tmp_path.glob('*.verify.json')))}.verify.json"
    p.write_text(json.dumps({**VERIFY, **change}))
    return p


def test_files_are_placed_only_where_they_reach_the_rung_target_on_its_split(summaries, tmp_path):
    from mincap.results.artifacts import load_artifacts

    summaries["mnist"]["config"] = {"n_val": 5000, "split_seed": 0}
    good = _verify_file(tmp_path)
    low = _verify_file(tmp_path, val_acc=0.985, file="low.mincap")
    other_split = _verify_file(tmp_path, n_val=1000, file="other.mincap")
    no_rung = _verify_file(tmp_path, dataset="kmnist", file="k.mincap")
    files = load_artifacts([str(p) for p in (good, low, other_split, no_rung)])
    info = ladder.ladder_info(list(summaries.values()), "prequential", compute=False, artifacts=files)
    (f,) = info.files
    assert (f["file"], f["x"], f["y"], f["two_part"], f["target"]) == ("small-99.mincap", 7163.0, 9000.0, 15000.0, 0.99)
    assert f["made_by"] == "mincap train"  # a record without `made_by`
    exported = load_artifacts([str(_verify_file(tmp_path, file="side.mincap", made_by="mincap export --side 6"))])
    (g,) = ladder.ladder_info(list(summaries.values()), "prequential", compute=False, artifacts=exported).files
    assert g["made_by"] == "mincap export --side 6"
    assert info.skipped["low.mincap"] == "validation 98.50% < target 99%"
    assert "the study used 5000" in info.skipped["other.mincap"]
    assert info.skipped["k.mincap"] == "no study of kmnist gives it a target"
    assert len(load_artifacts([str(tmp_path)])) == 5  # a folder: its *.verify.json
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(MincapError, match="not a verify record"):
        load_artifacts([str(tmp_path / "x.json")])
