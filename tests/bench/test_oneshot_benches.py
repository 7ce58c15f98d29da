"""bench/oneshot_ranking.py and bench/oneshot_samplers.py run end to end on a tiny supernet.

A 1-epoch supernet of tiny widths on 300 MNIST train images is trained into a temporary cache,
a fake from-scratch study (in space, snapped, out of space) is written to a temporary SQLite
database, and both benches' `main` run on them: their JSON has the fields the issue asks for.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import optuna
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import oneshot_ranking  # noqa: E402
import oneshot_samplers  # noqa: E402

from mincap import data  # noqa: E402
from mincap.nets.models import Conv, Spec  # noqa: E402
from mincap.oneshot.space import SubnetConfig, SupernetSpace  # noqa: E402
from mincap.oneshot.trainer import SupernetRecipe, train_supernet  # noqa: E402

SPACE = {"widths0": [4, 6], "widths": [4, 8], "width_step": 2, "depth": [2, 3]}
RECIPE = {"epochs": 1, "batch_size": 64, "n_random": 1}
LIMIT = 300


@pytest.fixture(scope="module")
def tiny(mnist_root, tmp_path_factory):
    """(data roots, fake from-scratch db) with the tiny supernet cached under the first root."""
    tmp = tmp_path_factory.mktemp("oneshot-bench")
    roots = f"{tmp}{os.pathsep}{mnist_root}"
    space = SupernetSpace(**SPACE)
    splits = data.load("mnist", root=roots, limit=LIMIT)
    train_supernet(space, splits, SupernetRecipe(**RECIPE), n_val=5000, split_seed=0,
                   limit=LIMIT, root=roots, progress=False)
    db = tmp / "scratch.db"
    study = optuna.create_study(study_name="fake", storage=f"sqlite:///{db}",
                                directions=["minimize", "maximize"])

    def add(spec: Spec, bits, val: float) -> None:
        attrs = {"final_spec": spec.to_json(), "bits_per_layer": list(bits),
                 "artifact_bits": 1000 + 100 * len(bits), "val_acc": val, "n_params": 500,
                 "n_nonzero": 400}
        study.add_trial(optuna.trial.create_trial(values=[attrs["artifact_bits"], val],
                                                  user_attrs=attrs))

    for widths, val in (((4, 4), 0.80), ((6, 8, 8), 0.90), ((6, 6, 4), 0.85)):
        cfg = SubnetConfig(widths)
        add(space.spec(cfg), [4] * space.n_layers(cfg.depth), val)
    add(space.spec(SubnetConfig((5, 8))), [3] * 4, 0.82)  # width 5: snapped to 6
    k5 = space.spec(SubnetConfig((4, 4)))
    k5 = Spec(k5.family, (k5.convs[0], Conv(4, 5, 1, 1, 0, separable=True)), (), "relu", True,
              "gap", 0.0, k5.in_shape, k5.n_classes)
    add(k5, [4] * 4, 0.7)  # kernel 5: out of the space
    return roots, db


def _args(roots) -> list[str]:
    return ["--space", json.dumps(SPACE), "--recipe", json.dumps(RECIPE), "--data", roots,
            "--limit", str(LIMIT)]


def test_tau_of_identical_lists_is_one():
    assert oneshot_ranking.kendall_tau([0.9, 0.95, 0.99], [0.9, 0.95, 0.99]) == 1.0
    assert oneshot_ranking.kendall_tau([0.9, 0.95], [0.99, 0.9]) == -1.0
    assert oneshot_ranking.kendall_tau([0.9], [0.9]) is None


def test_hypervolume_and_snapping():
    hv = oneshot_samplers.hypervolume
    assert hv([(10000, 0.995)], 0.99, (20000, 0.04)) == pytest.approx(10000 * 0.035)
    assert hv([(10000, 0.98)], 0.99, (20000, 0.04)) == 0.0  # infeasible: no volume
    two = hv([(10000, 0.995), (5000, 0.99)], 0.99, (20000, 0.04))
    assert two == pytest.approx(5000 * 0.03 + 10000 * 0.035)
    assert oneshot_ranking.snap_width(5, (6, 8), 2) == 6
    assert oneshot_ranking.snap_width(7, (6, 8), 2) == 8  # a tie goes to the wider
    assert oneshot_ranking.snap_width(13, (6, 8), 2) is None


def test_ranking_bench(tiny, tmp_path):
    roots, db = tiny
    out = tmp_path / "ranking.json"
    res = oneshot_ranking.main(_args(roots) + ["--db", f"{db}:fake", "--finetune-epochs", "1",
                                               "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    c = res["counts"]
    assert (c["total"], c["exact"], c["snapped"], c["out"]) == (5, 3, 1, 1)
    assert c["out_reasons"] == {"kernel 5": 1}
    assert res["supernet"]["how"] == "cached" and res["supernet"]["recipe"]["epochs"] == 1
    for part in ("oneshot_vs_scratch", "finetune_vs_scratch"):
        s = res[part]["exact"]
        assert s["n"] == 3 and s["gap"]["n"] == 3 and -1 <= s["tau"] <= 1
        assert res[part]["exact_and_snapped"]["n"] == 4
    row = next(r for r in res["rows"] if r["in_space"] == "snapped")
    assert row["snapped"] == {"0": [5, 6]} and row["config"]["widths"] == [6, 8]
    assert 0 <= row["oneshot"]["val_acc"] <= 1 and row["finetune"]["epochs"] == 1
    assert res["machine"]["under_load"] and "load_avg_start" in res["machine"]


def test_samplers_bench(tiny, tmp_path):
    roots, _ = tiny
    out = tmp_path / "samplers.json"
    res = oneshot_samplers.main(_args(roots) + ["--trials", "3", "--seeds", "1",
                                                "--out", str(out)])
    assert res["complete"] and json.loads(out.read_text())["complete"]
    assert set(res["summary"]) == {"tpe", "gp", "nsga2"}
    for r in res["runs"]:
        assert r["complete"] == r["trials"] == 3 and r["with_constraints"] == 3
    for agg in res["summary"].values():
        assert {"hv@target", "hv@target-0.02", "smallest_bits@target-0.01",
                "s_per_trial"} <= set(agg)
        assert agg["s_per_trial"]["n"] == 1
    assert res["reference_point"] == {"bits": 20000.0, "error": pytest.approx(0.04)}
    assert res["machine"]["under_load"]


def test_missing_supernet_stops_without_training(mnist_root, tmp_path):
    roots = f"{tmp_path}{os.pathsep}{mnist_root}"
    with pytest.raises(SystemExit, match="not cached"):
        oneshot_ranking.main(["--space", json.dumps(SPACE), "--recipe", '{"epochs": 2}',
                              "--data", roots, "--limit", str(LIMIT),
                              "--out", str(tmp_path / "x.json")])
