"""Fake study summaries (the dict `mincap summary --json` prints) for the results tests: no study, no data."""

import copy
import json

import pytest

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
# What issue 16 adds to the MNIST rung: the switching prequential code, the chosen network's
# two-part code, and three replicates of its configuration (two reach the target).
FAKES["mnist"]["entropy"]["prequential-switch"] = {"bits_per_example": 4100.0 / 60000, "bits_total": 4100.0}
FAKES["mnist"]["chosen"]["two_part"] = {"artifact_bits": 14000, "label_bits": 5500.0, "total_bits": 19500.0,
                                        "n_labels": 60000}
FAKES["mnist"]["chosen"]["replicates"] = {"trial": 3, "k": 3, "target": 0.99, "seeds": [100003, 200006, 300009],
                                          "val_acc": [0.991, 0.9896, 0.9902], "artifact_bits": [13800, 14600, 14200],
                                          "n_reach": 2}
# A file made outside the studies, as `mincap verify --json` writes it.
VERIFY = {"file": "studies/artifacts/small-99.mincap", "dataset": "mnist", "n_val": 5000, "split_seed": 0,
          "val_acc": 0.9905, "test_acc": 0.9911, "artifact_bits": 9000, "n_params": 2000, "nominal_bits": 8200,
          "two_part": {"artifact_bits": 9000, "label_bits": 6000.0, "total_bits": 15000.0, "n_labels": 60000}}


@pytest.fixture
def summaries():
    """A fresh copy of FAKES: {dataset: summary dict}, free to change."""
    return copy.deepcopy(FAKES)


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """(tmp_path, [summary JSON paths]) for FAKES; no entropy cache or data can leak in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MINCAP_DATA", str(tmp_path / "nodata"))
    paths = []
    for name, s in FAKES.items():
        p = tmp_path / "sums" / f"{name}.summary.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps(s))
        paths.append(p)
    return tmp_path, paths


@pytest.fixture
def run_plot():
    """`mincap plot PATHS --estimator prequential --no-compute -o TMP/fig/NAME.png EXTRA...`; returns the figure path."""

    def run(tmp, paths, name, *extra):
        out = tmp / "fig" / f"{name}.png"
        rc = main(["plot", *map(str, paths), "--estimator", "prequential", "--no-compute", "-o", str(out), *extra])
        assert rc == 0
        return out

    return run
