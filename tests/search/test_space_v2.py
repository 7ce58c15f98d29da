"""Issue 15's search space: the default study's draws obey its constraints; new keys parse and validate."""

import optuna
import pytest

from mincap.config.study import (
    DEFAULT_STUDY,
    StudyConfig,
    load_study_file,
    parse_study,
    seed_settings,
)
from mincap.errors import MincapError
from mincap.nets.models import PRESETS
from mincap.search import preset_params, sample_trial


def _draws(cfg, n=40, seed=0):
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    while len(out) < n:
        t = study.ask()
        try:  # unpadded draws that shrink the image to nothing are pruned at once
            out.append(sample_trial(t, cfg, (1, 28, 28), 10))
        except optuna.TrialPruned:
            assert "leaves no pixels" in t.user_attrs["stop_reason"]
            assert len(study.trials) < 3 * n  # rare enough not to waste a search
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    return out


def test_default_space_draws_lie_in_its_ranges():
    """The default study's draws: every value inside the file's own ranges and sets, whatever they are."""
    cfg = load_study_file(DEFAULT_STUDY)
    sp = cfg.space
    draws = _draws(cfg)
    c0s = [spec.convs[0].channels for spec, _, _ in draws if spec.convs]
    rest = [c.channels for spec, _, _ in draws for c in spec.convs[1:]]
    first = sp.channels0 if sp.channels0 != (0, 0) else sp.channels
    assert all(first[0] <= c <= first[1] for c in c0s)
    assert all(sp.channels[0] <= c <= sp.channels[1] for c in rest)
    assert all(sp.conv_depth[0] <= len(spec.convs) <= sp.conv_depth[1] for spec, _, _ in draws if spec.convs)
    assert {spec.head for spec, _, _ in draws if spec.convs} <= set(sp.heads)
    assert all(sp.hidden_depth[0] <= len(spec.hidden) <= sp.hidden_depth[1] for spec, _, _ in draws if spec.convs)
    ratios = {comp.prune_ratio for _, _, comp in draws}
    if sp.prune_ratios:
        assert ratios <= set(sp.prune_ratios) and (len(ratios) > 1) == (len(sp.prune_ratios) > 1)
    else:
        assert all(sp.prune_ratio[0] <= r <= sp.prune_ratio[1] for r in ratios)
    assert all(sp.epochs[0] <= tc.epochs <= sp.epochs[1] for _, tc, _ in draws)
    assert all(sp.bits[0] <= b <= sp.bits[1] for _, _, comp in draws for b in comp.bits_per_layer)
    assert {tc.batch_size for _, tc, _ in draws} <= set(sp.batch_size)


def test_first_layer_range_is_separate():
    cfg = parse_study({"space": {"families": ["cnn"], "conv_depth": [2, 2], "channels0": [30, 32],
                                 "channels": [4, 5], "heads": ["gap"], "hidden_depth": [0, 0]}})
    for spec, _, _ in _draws(cfg, n=10):
        assert 30 <= spec.convs[0].channels <= 32 and 4 <= spec.convs[1].channels <= 5


def test_old_study_files_parse_with_the_old_behaviour():
    cfg = parse_study({"space": {"prune_ratio": [0.0, 0.4]}})
    assert cfg.space.channels0 == (0, 0) and cfg.space.prune_ratios == () and not cfg.fidelity.enabled
    for spec, _, comp in _draws(cfg, n=10):
        assert 0.0 <= comp.prune_ratio <= 0.4 and spec.convs[0].channels <= cfg.space.channels[1]
    assert StudyConfig().fidelity == cfg.fidelity


@pytest.mark.parametrize("raw,key", [
    ({"space": {"prune_ratios": [0.0, 1.2]}}, "space.prune_ratios"),
    ({"space": {"channels0": [0, 8]}}, "space.channels0"),
    ({"fidelity": {"promote": 0.0}}, "fidelity.promote"),
    ({"fidelity": {"epochs": 0}}, "fidelity.epochs"),
    ({"fidelity": {"colour": 1}}, "colour"),
    ({"seed_recipe": {"epochs": 80}}, "seed_recipe.epochs"),
    ({"seed_recipe": {"batch_size": 100}}, "seed_recipe.batch_size"),
    ({"seed_recipe": {"lr": 1.0}}, "seed_recipe.lr"),
    ({"seed_recipe": {"qat_fraction": 0.9}}, "seed_recipe.qat_fraction"),
    ({"seed_recipe": {"bits": 9}}, "seed_recipe.bits"),
    ({"seed_recipe": {"colour": 1}}, "colour"),
    ({"space": {"scales": ["tensor"]}}, "space.scales"),
])
def test_bad_new_keys_refused_naming_the_key(raw, key):
    with pytest.raises(MincapError, match=key.replace(".", r"\.")):
        parse_study(raw)


@pytest.mark.parametrize("seed", load_study_file(DEFAULT_STUDY).study.seeds)
def test_default_seed_presets_are_reproduced_by_the_space_with_their_recipe(seed):
    cfg = load_study_file(DEFAULT_STUDY)
    spec, train_cfg, comp = sample_trial(optuna.trial.FixedTrial(preset_params(seed, cfg)), cfg, (1, 28, 28), 10)
    preset, recipe, extras = seed_settings(seed, cfg.seed_recipe)
    want = PRESETS[preset]
    assert (spec.convs, spec.head, spec.hidden) == (want.convs, want.head, want.hidden)
    assert comp.prune_ratio == 0.0 and set(comp.bits_per_layer) == {recipe.bits or 4}
    # The seed trains by the file's [seed_recipe], or by its own overrides after "@": the recipe's
    # epochs and batch, its QAT fraction of those epochs, the space's first weight scales.
    sp = cfg.space
    epochs = recipe.epochs or sp.epochs[1]  # unset: the rule on the space (mincap.search.space.preset_params)
    assert train_cfg.batch_size == (recipe.batch_size or sp.batch_size[0]) and train_cfg.epochs == epochs
    assert comp.qat_epochs == round((recipe.qat_fraction or sp.qat_fraction[1]) * epochs)
    assert comp.per_channel == (extras.get("scales", sp.scales[0]) == "channel")


def test_a_seed_may_override_the_recipe_for_itself():
    base = {"study": {"seeds": ["sep-1.8k", "sep-1.8k@epochs=60,path=1,scales=channel"]},
            "space": {"epochs": [10, 60], "batch_size": [128, 256], "separable": [True, False], "padding": ["valid"],
                      "conv_depth": [3, 5], "scales": ["layer", "channel"], "paths": ["", "bits=3"]},
            "seed_recipe": {"epochs": 50, "batch_size": 256}}
    cfg = parse_study(base)
    own = preset_params("sep-1.8k@epochs=60,path=1,scales=channel", cfg)
    plain = preset_params("sep-1.8k", cfg)
    assert (own["epochs"], own["path"], own["scales"], own["batch_size"]) == (60, "bits=3", "channel", 256)
    assert (plain["epochs"], plain["path"], plain["scales"]) == (50, "", "layer")
    for seed, msg in (("sep-1.8k@epochs=90", "seed_recipe.epochs"), ("sep-1.8k@colour=1", "PRESET@key=value"),
                      ("sep-1.8k@epochs=x", "epochs must be int"), ("nope@epochs=20", "unknown preset 'nope'"),
                      ("sep-1.8k@path=2", "path is an index"), ("sep-1.8k@scales=tensor", "scales must be one of")):
        with pytest.raises(MincapError, match=msg):
            parse_study({**base, "study": {"seeds": [seed]}})


def test_seed_recipe_sets_the_seed_trials_training_and_unset_values_follow_the_space():
    base = {"study": {"seeds": ["sep-1.8k"]},
            "space": {"epochs": [10, 60], "lr": [0.003, 0.05], "batch_size": [128, 256], "bits": [2, 5],
                      "qat_fraction": [0.2, 0.5], "weight_decay": [1e-5, 1e-3], "augment": [0, 2],
                      "separable": [True, False], "padding": ["valid"], "conv_depth": [3, 5],
                      "scales": ["layer", "channel"]}}
    plain = preset_params("sep-1.8k", parse_study(base))
    assert (plain["epochs"], plain["batch_size"], plain["qat_fraction"], plain["bits0"]) == (60, 128, 0.5, 4)
    recipe = {"epochs": 50, "batch_size": 256, "lr": 0.01, "weight_decay": 1e-4, "augment": 0,
              "qat_fraction": 0.24, "bits": 3}
    cfg = parse_study({**base, "seed_recipe": recipe})
    p = preset_params("sep-1.8k", cfg)
    assert {k: p[k] for k in recipe if k != "bits"} == {k: v for k, v in recipe.items() if k != "bits"}
    assert {p[f"bits{i}"] for i in range(PRESETS["sep-1.8k"].n_weight_layers())} == {3}
    spec, train_cfg, comp = sample_trial(optuna.trial.FixedTrial(p), cfg, (1, 28, 28), 10)
    assert spec.convs == PRESETS["sep-1.8k"].convs
    assert (train_cfg.epochs, train_cfg.batch_size, train_cfg.augment_shift) == (50, 256, 0)
    assert comp.qat_epochs == 12 and set(comp.bits_per_layer) == {3}
    assert comp.per_channel is False  # the first of space.scales
