"""Multi-fidelity screening: the promotion rule on constructed histories, and a small search using it."""

import optuna
import pytest
from test_search import _trials

from mincap.cli import main
from mincap.config import CompressConfig, TrainConfig
from mincap.config.study import Fidelity
from mincap.search.fidelity import (
    pareto_ranks,
    promote_decision,
    screen_configs,
    screen_key,
    screen_peers,
    screen_splits,
)

FI = Fidelity(enabled=True, epochs=2, subset=100, promote=0.5, min_peers=3, min_val_acc=0.5)


def test_pareto_ranks_sort_fronts():
    # (bits, acc): fewer bits and higher accuracy are better
    pts = [(100, 0.90), (200, 0.95), (150, 0.80), (300, 0.94), (400, 0.70)]
    assert pareto_ranks(pts) == [0, 0, 1, 1, 2]
    assert pareto_ranks([(1, 0.5), (1, 0.5)]) == [0, 0]  # equal points do not dominate each other


def test_promotion_rule_on_constructed_histories():
    peers = [(100, 0.96), (120, 0.97), (140, 0.98), (160, 0.985)]  # one front
    # below that front: its 4 points lie ahead, quota 0.5 x 5 = 2.5 -> stopped
    ok, why = promote_decision((200, 0.90), peers, FI)
    assert not ok and "stopped" in why
    assert not promote_decision((150, 0.965), peers, FI)[0]  # dominated by two: still behind the whole front
    # on the front (nobody has fewer bits and more accuracy): nothing ahead -> promoted
    assert promote_decision((50, 0.60), peers, FI)[0]
    assert promote_decision((130, 0.975), peers, FI)[0]
    # one point dominates the rest: a point in the second front has 1 ahead (< 2.5) -> promoted,
    # in the third front 4 ahead -> stopped; a stricter fraction (0.2 x 5 = 1) stops the second front too
    peers = [(100, 0.99), (300, 0.90), (400, 0.91), (500, 0.92)]
    assert promote_decision((350, 0.95), peers, FI)[0]
    assert not promote_decision((600, 0.80), peers, FI)[0]
    strict = Fidelity(enabled=True, promote=0.2, min_peers=3)
    assert not promote_decision((350, 0.95), peers, strict)[0] and promote_decision((90, 0.5), peers, strict)[0]
    # too few peers: promoted whatever; below the floor: stopped whatever
    assert promote_decision((999, 0.55), peers[:2], FI)[0]
    ok, why = promote_decision((10, 0.40), [], FI)
    assert not ok and "min_val_acc" in why


def test_screen_peers_same_fidelity_other_trials_only():
    def t(n, key, point):
        return optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"screen_key": key,
                                         "screen": point}) if point else optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, values=[1.0, 0.5])

    trials = [t(0, "e2/n100", [10, 0.9]), t(1, "e1/n100", [11, 0.8]), t(2, "e2/n100", None), t(3, "e2/n100", [12, 0.7])]
    for i, tr in enumerate(trials):
        tr.number = i
    assert screen_peers(trials, "e2/n100", exclude=3) == [(10.0, 0.9)]
    assert screen_peers(trials, "e2/n100", exclude=99) == [(10.0, 0.9), (12.0, 0.7)]
    assert screen_key(FI) == "e2/n100" and screen_key(Fidelity(subset=0)) == "e2/nall"


def test_screen_recipe_is_short_quantized_and_unpruned(mnist_small):
    tc = TrainConfig(epochs=20, lr=0.02, seed=7)
    comp = CompressConfig(bits_per_layer=(3, 4), qat_epochs=10, prune_ratio=0.3, prune_steps=2, sparsity=0.2)
    s_tc, s_comp = screen_configs(tc, comp, FI)
    assert s_tc.epochs == 2 and s_tc.seed == 7 and s_tc.lr == 0.02
    assert s_comp.qat_epochs == 1 and s_comp.prune_ratio == 0.0 and s_comp.sparsity == 0.0
    assert s_comp.bits_per_layer == (3, 4)
    assert screen_configs(tc, CompressConfig(qat_epochs=0), FI)[1].qat_epochs == 1  # a collapse must show
    small = screen_splits(mnist_small, FI)
    assert len(small.train) == 100 and len(small.val) == len(mnist_small.val)
    assert screen_splits(mnist_small, Fidelity(subset=0)) is mnist_small


FIDELITY = """
[fidelity]
enabled = true
epochs = 1
subset = 300
promote = 0.4
min_peers = 1
min_val_acc = 0.3
"""


@pytest.fixture
def screened_study(tmp_path, mnist_root):
    from test_search import make_study

    f = make_study(tmp_path, name="fid", epochs=2)
    f.write_text(f.read_text() + FIDELITY)
    assert main(["search", str(f), "--trials", "6", "--no-progress", "--data-dir", str(mnist_root)]) == 0
    return f


def test_search_with_screening_follows_the_rule(screened_study):
    trials = sorted(_trials(screened_study), key=lambda t: t.number)
    assert len(trials) == 6
    seed, sampled = trials[0], trials[1:]
    assert seed.user_attrs["seed_preset"] == "mlp-32" and "screen" not in seed.user_attrs
    assert seed.state.name == "COMPLETE" and seed.user_attrs["fidelity"] == "full"
    fi = Fidelity(enabled=True, epochs=1, subset=300, promote=0.4, min_peers=1, min_val_acc=0.3)
    whys = []
    for i, t in enumerate(sampled):
        a = t.user_attrs
        assert a["screen_key"] == "e1/n300" and len(a["screen"]) == 2 and a["screen"][0] > 0
        # one process: the peers are exactly the trials screened before this one
        peers = [tuple(p.user_attrs["screen"]) for p in sampled[:i]]
        promoted, why = promote_decision(tuple(a["screen"]), peers, fi)
        assert a["screen_decision"] == why
        if promoted:  # trained in full: complete, or stopped by the full run's own early-stop rule
            assert a["fidelity"] == "full" and a["curve"]
            assert t.state.name == "COMPLETE" or a["stop_reason"].startswith("early stop")
        else:  # screening never yields objective values or a feasibility constraint
            assert a["fidelity"] == "screen" and t.state.name == "PRUNED" and t.values is None
            assert a["stop_reason"].startswith("screening (e1/n300)") and "val_acc" not in a
        whys.append(why)
    # this seeded run exercises all three outcomes: promoted, stopped by rank, stopped by the floor
    assert any(w.startswith("promoted") for w in whys) and any(w.startswith("stopped") for w in whys)
    assert any("min_val_acc" in w for w in whys)
