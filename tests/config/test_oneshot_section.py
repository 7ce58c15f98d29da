"""The study file's `[oneshot]` table builds the one-shot package's dataclasses, with their defaults."""

from __future__ import annotations

import dataclasses

import pytest

from mincap.config.oneshot import (
    EXCLUDED,
    RECIPE_KEYS,
    SETTINGS_KEYS,
    SPACE_KEYS,
    Oneshot,
    preset_subnet,
)
from mincap.config.study import parse_study
from mincap.errors import MincapError
from mincap.oneshot import trial
from mincap.oneshot.settings import OneshotSettings
from mincap.oneshot.space import SubnetConfig, SupernetSpace
from mincap.oneshot.trainer import SupernetRecipe


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_table_holds_every_field_of_the_three_dataclasses_and_nothing_else():
    # A field added to a dataclass fails here until the table has its key (it keeps its default).
    assert set(RECIPE_KEYS.values()) == _names(SupernetRecipe)
    assert set(SPACE_KEYS.values()) | set(EXCLUDED["space"]) == _names(SupernetSpace)
    assert set(SETTINGS_KEYS.values()) | set(EXCLUDED["settings"]) == _names(OneshotSettings)
    keys = [*RECIPE_KEYS, *SPACE_KEYS, *SETTINGS_KEYS]
    assert len(keys) == len(set(keys)) and set(keys) | {"enabled", "seeds"} == _names(Oneshot)


def test_its_defaults_are_the_dataclasses_defaults():
    o = Oneshot()
    assert o.recipe() == SupernetRecipe() and o.space() == SupernetSpace()
    assert o.settings(0.99) == OneshotSettings(target=0.99) and not o.enabled and not o.seeds
    assert o.space((1, 32, 32), 3) == SupernetSpace().with_data((1, 32, 32), 3)


def test_the_scoring_settings_are_the_ones_the_objective_had():
    """`OneshotSettings` moved to `mincap.oneshot.settings` so that the parser can import it; until
    `mincap.oneshot.trial` imports it from there, both must say the same."""
    if trial.OneshotSettings is OneshotSettings:
        return
    assert [(f.name, f.default) for f in dataclasses.fields(trial.OneshotSettings)] == \
        [(f.name, f.default) for f in dataclasses.fields(OneshotSettings)]


def test_values_reach_the_dataclass_they_name():
    o = parse_study({"oneshot": {"enabled": True, "epochs": 3, "seed": 7, "finetune_seed": 5, "widths": [4, 8], "widths0": [4, 8],
                                 "width_step": 4, "sparsities": [0, 0.5], "separable": False}}).oneshot
    assert o.recipe().epochs == 3 and o.recipe().seed == 7 and o.settings(0.9).seed == 5
    assert o.space().widths == (4, 8) and o.space().width_step == 4 and not o.space().separable
    assert o.settings(0.9).sparsities == (0.0, 0.5) and o.settings(0.9).target == 0.9


@pytest.mark.parametrize("table,match", [
    ({"epochs": 0}, r"^oneshot\.epochs: must be >= 1"),
    ({"widths0": [6, 11]}, r"^oneshot\.widths0: 6\.\.11 is not on the grid of width_step 2"),
    ({"pools": 4}, r"^oneshot\.pools: 4 is more than the smallest depth 3"),
    ({"epochs": 4, "largest_epochs": 4}, r"^oneshot\.largest_epochs: 4 is not less than epochs 4"),
    ({"depth": [3, 9]}, r"^oneshot: .*no pixels"),
    ({"bits": [1, 4]}, r"^oneshot\.bits: must be within \[2, 8\]"),
    ({"lr": "fast"}, r"^oneshot\.lr: expected a number"),
    ({"sparsities": []}, r"^oneshot\.sparsities: empty list"),
    ({"kernel": 3, "padding": "wide"}, r"^oneshot\.padding: must be one of valid, same"),
    ({"secret": 1}, r"^\[oneshot\]: unknown key 'secret'"),
])
def test_bad_values_name_their_key(table, match):
    with pytest.raises(MincapError, match=match):
        parse_study({"oneshot": table})


def test_seed_presets_must_be_sub_networks_when_enqueued():
    o = Oneshot(enabled=True, seeds=True)
    assert preset_subnet("sep-1.8k", o) == SubnetConfig((8, 16, 16, 16, 16), (4,) * 10)
    assert preset_subnet("sep-2.4k", o, 3).bits == (3,) * 10
    with pytest.raises(MincapError, match=r"^study\.seeds: preset 'tiny' is not a sub-network"):
        parse_study({"study": {"seeds": ["tiny"]}, "oneshot": {"enabled": True, "seeds": True}})
    # Not enqueued (the default) or not one-shot: a preset outside the supernet's space is fine.
    parse_study({"study": {"seeds": ["tiny"]}, "oneshot": {"enabled": True}})
    parse_study({"study": {"seeds": ["tiny"]}, "oneshot": {"seeds": True}})


def test_a_oneshot_studys_seed_recipe_is_not_a_point_of_the_per_trial_space():
    """It is the from-scratch recipe of the replicates; [space] is not searched."""
    raw = {"seed_recipe": {"epochs": 50}, "space": {"epochs": [6, 16]}}
    with pytest.raises(MincapError, match=r"^seed_recipe\.epochs"):
        parse_study(raw)
    parse_study({**raw, "oneshot": {"enabled": True}})
