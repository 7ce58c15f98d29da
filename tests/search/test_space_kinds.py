"""Separable blocks, quantizers and compression paths as searchable choices."""

import optuna
import pytest

from mincap.config.study import parse_study
from mincap.errors import MincapError
from mincap.nets.models import PRESETS
from mincap.search import preset_params, sample_trial
from mincap.search.batched import ask_group

SPACE = {"families": ["cnn"], "conv_depth": [3, 3], "separable": [True, False], "quantizers": ["max", "lsq"],
         "anneal_epochs": [0, 2], "paths": ["", "sparsity=0.3;sparsity=0.5"], "prune_ratios": [0.0]}


def _study(seed=0):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=seed))


def test_draws_use_every_kind_and_bits_match_the_layers():
    cfg = parse_study({"space": SPACE})
    study, draws = _study(), []
    for _ in range(30):
        t = study.ask()
        draws.append(sample_trial(t, cfg, (1, 28, 28), 10))
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert not any(spec.convs[0].separable for spec, _, _ in draws)  # one input channel: never separable
    assert {c.separable for spec, _, _ in draws for c in spec.convs[1:]} == {True, False}
    assert {comp.quantizer for _, _, comp in draws} == {"max", "lsq"}
    assert {comp.path for _, _, comp in draws} == set(SPACE["paths"])
    for spec, _, comp in draws:
        assert len(comp.bits_per_layer) == spec.n_weight_layers()  # a separable block has two convs
        assert comp.prune_finetune_epochs >= (1 if comp.path else 0)  # a path's steps fine-tune


def test_separable_flags_are_structural_for_batched_groups():
    """A group shares its separable flags; a draw with a separable block (which the batched engine
    does not train) is asked alone, and the others fill groups of k."""
    cfg = parse_study({"space": {**SPACE, "quantizers": ["max"], "anneal_epochs": [0, 0], "paths": [""]}})
    sizes = {}
    for seed in range(8):
        group, pruned = ask_group(_study(seed), cfg, (1, 28, 28), 10, 3)
        assert not pruned
        flags = {tuple(c.separable for c in spec.convs) for _, spec, _, _ in group}
        assert len(flags) == 1
        sizes.setdefault(any(next(iter(flags))), set()).add(len(group))
    assert sizes == {True: {1}, False: {3}}


def test_a_draw_that_is_no_network_is_pruned_in_a_batched_group_not_raised():
    """Unpadded 5x5 blocks with two pools leave no pixels: every draw is told PRUNED, the loop goes on."""
    cfg = parse_study({"space": {"families": ["cnn"], "conv_depth": [5, 5], "kernels": [5], "pools": [2, 2],
                                 "padding": ["valid"]}})
    study = _study(1)
    group, pruned = ask_group(study, cfg, (1, 28, 28), 10, 3)
    assert group == [] and len(pruned) == 1 and pruned[0].state.name == "PRUNED"
    assert [t.state.name for t in study.trials] == ["PRUNED"]


@pytest.mark.parametrize("preset", ["sep-700", "sep-1.8k"])
def test_seed_presets_reproduce_separable_valid_blocks_and_take_the_first_path(preset):
    cfg = parse_study({"space": {**SPACE, "conv_depth": [5, 5], "channels": [4, 16], "pools": [1, 2],
                                 "padding": ["same", "valid"]}})
    trial = optuna.trial.FixedTrial(preset_params(preset, cfg))
    spec, _, comp = sample_trial(trial, cfg, (1, 28, 28), 10)
    assert spec.convs == PRESETS[preset].convs
    assert comp.path == SPACE["paths"][0] and comp.quantizer == "max"


def test_bad_path_or_quantizer_in_a_study_file_is_one_line():
    with pytest.raises(MincapError, match="space.paths"):
        parse_study({"space": {"paths": ["sparsity=2"]}})
    with pytest.raises(MincapError, match="space.quantizers"):
        parse_study({"space": {"quantizers": ["fancy"]}})


NO_FIT = {"families": ["cnn"], "conv_depth": [2, 5], "kernels": [3, 5], "pools": [0, 2], "padding": ["valid"],
          "separable": [True, False]}


@pytest.mark.parametrize("size", [7, 14])
def test_with_fit_input_every_draw_is_a_network_for_the_input(size):
    """Unpadded blocks on a 7x7 or 14x14 image: without `fit_input` some draws leave no pixels;
    with it every draw is a network, as deep as fits, and says what was cut."""
    study, plain, cut = _study(2), 0, 0
    for fit in (False, True):
        cfg = parse_study({"space": {**NO_FIT, "fit_input": fit}})
        for _ in range(40):
            t = study.ask()
            try:
                spec, _, comp = sample_trial(t, cfg, (1, size, size), 10)
            except optuna.TrialPruned:
                assert not fit, "a fitted draw was no network"
                plain += 1
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
                continue
            h = spec.feature_shape()[1]  # raises if the blocks leave no pixels
            assert h >= 1 and len(comp.bits_per_layer) == spec.n_weight_layers()
            fitted = t.user_attrs.get("fitted_to_input")
            if fitted:
                assert fit and fitted["conv_depth"] == len(spec.convs) <= fitted["drawn_conv_depth"]
                assert fitted["pools"] == sum(c.pool > 1 for c in spec.convs) <= fitted["drawn_pools"]
                assert (fitted["conv_depth"], fitted["pools"]) != (fitted["drawn_conv_depth"], fitted["drawn_pools"])
                cut += 1
            study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert plain > 0 and cut > 0  # the space really draws networks that do not fit


def test_fit_input_leaves_a_draw_that_fits_as_it_was():
    cfg = parse_study({"space": {**SPACE, "conv_depth": [5, 5], "channels": [4, 16], "pools": [1, 2],
                                 "padding": ["same", "valid"], "fit_input": True}})
    trial = optuna.trial.FixedTrial(preset_params("sep-1.8k", cfg))
    spec, _, _ = sample_trial(trial, cfg, (1, 28, 28), 10)
    assert spec.convs == PRESETS["sep-1.8k"].convs and "fitted_to_input" not in trial.user_attrs
