"""`mincap search` on a one-shot study (`[oneshot] enabled`): a tiny supernet on a slice of real MNIST,
trials that score its sub-networks, the cached supernet reused, the deadline, summary/export/verify."""

from __future__ import annotations

import json

import optuna
import pytest

from mincap.cli import main
from mincap.config.study import load_study_file
from mincap.evaluation import holdout
from mincap.format.container import decode
from mincap.nets.models import PRESETS, Spec
from mincap.oneshot import trainer
from mincap.search.oneshot_run import SUPERNETS_ATTR, load_splits, supernet_file
from mincap.search.replicates import oneshot_config
from mincap.search.storage import artifact_bytes, open_study
from mincap.training.engine import evaluate

# 1,000 train images, 200 validation images, a supernet of 2-4 channels trained 2 epochs: seconds.
STUDY = """
[study]
name = "{name}"
target = {target}
seeds = ["sep-1.8k"]
[data]
n_val = 200
limit = {limit}
[storage]
heartbeat_interval_s = 1
grace_period_s = 2
[seed_recipe]
epochs = 1
batch_size = 128
[oneshot]
enabled = true
{extra}
epochs = {epochs}
batch_size = 32
lr = 0.05
n_random = 1
calib_images = 100
sparsities = [0.0, 0.2]
finetune_epochs = 1
finetune_batch_size = 64
"""
TINY = """widths0 = [2, 4]
widths = [2, 4]
depth = [2, 3]
bits = [2, 4]"""


def make_study(tmp_path, name="os", *, target=0.15, limit=1000, epochs=2, extra=TINY):
    f = tmp_path / f"{name}.toml"
    f.write_text(STUDY.format(name=name, target=target, limit=limit, epochs=epochs, extra=extra))
    return f


@pytest.fixture
def data_dir(tmp_path, mnist_root, monkeypatch):
    """A data folder of its own (MNIST linked in): the supernet's cache is written beside the data."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    d = tmp_path / "data"
    d.mkdir()
    (d / "MNIST").symlink_to(mnist_root / "MNIST")
    return str(d)


def _search(f, data_dir, *args):
    return main(["search", str(f), "--data-dir", data_dir, *args])


def _trials(f):
    cfg = load_study_file(f)
    return optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).get_trials()


def _cache(f, data_dir):
    cfg = load_study_file(f)
    return supernet_file(cfg, load_splits(cfg, data_dir), data_dir)


def _no_training(*a, **k):
    raise AssertionError("a cached supernet must not be trained again")


def test_a_oneshot_search_runs_its_trials_and_resumes_on_the_cached_supernet(
        tmp_path, data_dir, test_reads, monkeypatch, capsys):
    f = make_study(tmp_path)
    with holdout.sealed():
        assert _search(f, data_dir, "--trials", "4", "--no-progress") == 0
        cfg = load_study_file(f)
        splits = load_splits(cfg, data_dir)
        trials = _trials(f)
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        key, path, done, _ = _cache(f, data_dir)
        assert path is not None and done == 2
        for t in trials:
            a = t.user_attrs
            data = artifact_bytes(cfg, t)
            assert evaluate(decode(data).model, splits.val)[0] == a["val_acc"] == t.values[1]
            assert 8 * len(data) == a["artifact_bits"] == t.values[0]
            assert a["supernet"] == key and a["oneshot"]["val_acc"] <= 1.0
            assert "seed_preset" not in a  # [study] seeds are not a one-shot study's unless it asks
            assert set(t.params) <= {"conv_depth", "c0", "c1", "c2", "sparsity"} | {f"bits{i}" for i in range(6)}
        study = open_study(cfg, create=False)
        assert "seeded" not in study.user_attrs
        assert study.user_attrs[SUPERNETS_ATTR][key]["epochs"] == 2

        # Resumed: the cached supernet is loaded, not trained again, and the monitor shows its trials.
        mtime = path.stat().st_mtime_ns
        monkeypatch.setattr(trainer, "_step", _no_training)
        capsys.readouterr()
        assert _search(f, data_dir, "--trials", "2") == 0
    err = capsys.readouterr().err
    assert f"supernet {key} loaded from its cache" in err
    assert "trial 4 COMPLETE" in err and "trial 5 COMPLETE" in err
    trials = _trials(f)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6 and path.stat().st_mtime_ns == mtime
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6  # the sampler moved on
    assert [p for p in test_reads if not p[1]] == []  # no test part read, not even from a cache miss


def test_summary_export_verify_and_from_scratch_replicates(tmp_path, data_dir, capsys):
    f = make_study(tmp_path, name="done")
    assert _search(f, data_dir, "--trials", "6", "--no-progress") == 0
    cfg = load_study_file(f)
    capsys.readouterr()
    assert main(["summary", str(f), "--json", "--no-test", "--replicates", "1", "--data-dir", data_dir]) == 0
    s = json.loads(capsys.readouterr().out)
    c = s["chosen"]
    assert c is not None, "no trial reached the (low) target"
    (best,) = [t for t in _trials(f) if t.number == c["trial"]]
    assert c["fidelity"] == best.user_attrs["fidelity"] and c["inherited_val_acc"] == best.user_attrs["oneshot"]["val_acc"]
    rep = c["replicates"]
    assert rep["k"] == 1 and c["scratch_mean_val_acc"] == rep["val_acc"][0]
    assert c["oneshot_gap"] == pytest.approx(c["val_acc"] - rep["val_acc"][0])
    assert s["oneshot"]["n_trials"] == 6 and len(s["oneshot"]["supernets"]) == 1
    # The from-scratch run: the sub-network's own spec (batch norm on), LSQ at its bits, [seed_recipe].
    spec, train_cfg, comp = oneshot_config(best, cfg)
    assert spec == Spec.from_json(best.user_attrs["spec"]) and spec.batch_norm
    assert comp.quantizer == "lsq" and list(comp.bits_per_layer) == best.user_attrs["bits_per_layer"]
    assert train_cfg.epochs == 1 and train_cfg.batch_size == 128 and comp.path == "side=6"
    assert main(["summary", str(f), "--no-test", "--data-dir", data_dir]) == 0  # the tables render
    assert "one-shot minus from scratch" in capsys.readouterr().out

    out = tmp_path / "chosen.mincap"
    assert main(["export", str(f), "-o", str(out)]) == 0
    assert out.read_bytes() == artifact_bytes(cfg, best)
    capsys.readouterr()
    assert main(["verify", str(out), "--data-dir", data_dir, "--n-val", "200", "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["artifact_bits"] == c["artifact_bits"] and v["val_acc"] == c["val_acc"]


def test_the_deadline_stops_the_supernets_training_and_workers_share_the_cached_one(
        tmp_path, data_dir, capsys):
    f = make_study(tmp_path, name="late")
    # The deadline passes before the training has finished its first epoch (it trains in this
    # process and checks the deadline every step: a tiny epoch takes well under a second).
    assert _search(f, data_dir, "--trials", "2", "--no-progress", "--timeout", "0.001") == 0
    err = capsys.readouterr().err
    assert "the --timeout deadline passed while the supernet trained: 0 of 2 epochs saved" in err
    assert _trials(f) == []
    # With time enough, the training finishes it and the trials run within the deadline.
    assert _search(f, data_dir, "--trials", "2", "--no-progress", "--timeout", "300") == 0
    _, path, done, _ = _cache(f, data_dir)
    assert done == 2 and [t.state.name for t in _trials(f)] == ["COMPLETE"] * 2
    mtime = path.stat().st_mtime_ns
    capsys.readouterr()
    # Two worker processes load the cached supernet, none trains it.
    assert _search(f, data_dir, "--trials", "2", "--no-progress", "--workers", "2") == 0
    assert "loaded from its cache" in capsys.readouterr().err
    trials = _trials(f)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4 and path.stat().st_mtime_ns == mtime
    assert len({t.user_attrs["worker"] for t in trials[2:]}) == 2


def test_seed_presets_are_enqueued_as_sub_networks_when_the_study_asks(tmp_path, data_dir):
    # The default space (it holds sep-1.8k), trained 1 epoch on 300 images.
    f = make_study(tmp_path, name="seeded", limit=300, epochs=1, extra="seeds = true")
    assert _search(f, data_dir, "--trials", "2", "--no-progress") == 0
    first, second = _trials(f)
    assert first.user_attrs["seed_preset"] == "sep-1.8k" and "seed_preset" not in second.user_attrs
    assert Spec.from_json(first.user_attrs["spec"]) == PRESETS["sep-1.8k"]
    assert first.user_attrs["bits_per_layer"] == [4] * 10 and first.user_attrs["sparsity"] == 0.0
    assert first.state.name == second.state.name == "COMPLETE"


@pytest.mark.parametrize("line,key", [
    ("epochs = 0", "oneshot.epochs"),
    ("widths = [8, 23]", "oneshot.widths"),
    ("padding = \"full\"", "oneshot.padding"),
    ("sparsities = [0.5, 1.0]", "oneshot.sparsities"),
    ("pools = 4", "oneshot.pools"),
    ("depth = \"deep\"", "oneshot.depth"),
    ("nope = 1", "'nope'"),
])
def test_bad_oneshot_values_are_one_line_errors(tmp_path, capsys, line, key):
    f = tmp_path / "bad.toml"
    f.write_text(f"[study]\nname = \"bad\"\n[oneshot]\nenabled = true\n{line}\n")
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mincap: error: ") and key in err[0], err
    assert not (tmp_path / "bad.db").exists()
