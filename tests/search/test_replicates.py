"""`mincap summary --replicates K`: K retrainings of the chosen configuration, counted, stored, not recomputed."""

import json

import pytest
from test_search import _trials, make_study

from mincap.cli import main
from mincap.config.study import load_study_file
from mincap.errors import MincapError
from mincap.search import replicates
from mincap.search.storage import open_study


@pytest.fixture
def done_study(tmp_path, mnist_root):
    f = make_study(tmp_path, name="rep", target=0.5)
    assert main(["search", str(f), "--trials", "1", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    return f


def test_replicates_counted_stored_and_not_recomputed(done_study, mnist_root, monkeypatch, capsys):
    calls = []
    real = replicates.train_trial

    def counting(spec, splits, train_cfg, comp, **kw):
        calls.append(train_cfg.seed)
        return real(spec, splits, train_cfg, comp, **kw)

    monkeypatch.setattr(replicates, "train_trial", counting)
    cfg = load_study_file(done_study)
    study = open_study(cfg, create=False)
    (trial,) = _trials(done_study)
    r = replicates.replicate_trial(study, trial, cfg, k=2, data_dir=str(mnist_root))
    assert len(calls) == 2 and r["k"] == 2 and r["seeds"] == calls
    trial_seed = cfg.study.seed + trial.number
    assert trial_seed not in calls and len(set(calls)) == 2
    assert r["n_reach"] == sum(a >= cfg.study.target for a in r["val_acc"])
    assert all(0.0 < a <= 1.0 for a in r["val_acc"]) and all(b > 0 for b in r["artifact_bits"])
    assert len(open_study(cfg, create=False).user_attrs[replicates.replicates_key(trial.number)]["runs"]) == 2
    # asked again: the stored runs, no training
    assert replicates.replicate_trial(open_study(cfg, create=False), trial, cfg, k=2) == r and len(calls) == 2
    # more asked: only the missing seed trains; the first two are kept
    r3 = replicates.replicate_trial(open_study(cfg, create=False), trial, cfg, k=3, data_dir=str(mnist_root))
    assert len(calls) == 3 and r3["seeds"][:2] == r["seeds"] and r3["val_acc"][:2] == r["val_acc"]
    # the summary shows them (JSON), without training again
    capsys.readouterr()
    assert main(["summary", str(done_study), "--json", "--no-test", "--replicates", "3",
                 "--data-dir", str(mnist_root)]) == 0
    chosen = json.loads(capsys.readouterr().out)["chosen"]
    assert chosen["replicates"]["k"] == 3 and chosen["replicates"]["n_reach"] == r3["n_reach"] and len(calls) == 3


def test_replicates_refuse_a_space_that_no_longer_fits(done_study, tmp_path):
    cfg = load_study_file(done_study)
    (trial,) = _trials(done_study)
    other = tmp_path / "other.toml"
    other.write_text(done_study.read_text().replace('families = ["mlp"]', 'families = ["cnn"]'))
    with pytest.raises(MincapError, match="space"):
        replicates.replicate_trial(open_study(cfg, create=False), trial, load_study_file(other), k=1)


def test_summary_replicates_negative_is_one_line(done_study, capsys):
    assert main(["summary", str(done_study), "--replicates", "-1"]) == 2
    assert "--replicates must be >= 0" in capsys.readouterr().err
