"""The study file's `[oneshot]` table: a one-shot search (`mincap.oneshot`) instead of per-trial training.

One flat table holds three things, each built from it as the one-shot package's own dataclass,
whose defaults are the table's (read from them here, not written twice):

- the supernet's training, `SupernetRecipe` (`recipe()`): epochs, batch_size, lr, ...;
- the family and its elastic ranges, `SupernetSpace` (`space()`): widths0, widths, width_step,
  depth, bits, separable, pools, padding, ... (the input shape and class count: the dataset's);
- how trials are scored and promoted, `OneshotSettings` (`settings()`): calib_images, sparsities,
  promote, promote_margin, promote_front, finetune_epochs, ... (the target: `[study] target`).

A key is the field's own name, but for the two seeds: `seed` is the supernet's
(`SupernetRecipe.seed`), `finetune_seed` the fine-tuning's (`OneshotSettings.seed`).
`check_oneshot` adds what no bound of a single key can say; `preset_subnet` places a seed preset
in the space (`[oneshot] seeds = true`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mincap.config.rules import checked
from mincap.errors import MincapError
from mincap.nets.models import PRESETS
from mincap.oneshot.settings import OneshotSettings
from mincap.oneshot.space import HEADS, PADDINGS, SubnetConfig, SupernetSpace
from mincap.oneshot.trainer import SupernetRecipe

__all__ = ["EXCLUDED", "RECIPE_KEYS", "SETTINGS_KEYS", "SPACE_KEYS", "Oneshot", "check_oneshot",
           "preset_subnet"]

_R, _S, _O = SupernetRecipe(), SupernetSpace(), OneshotSettings()


@dataclass(frozen=True)
class Oneshot:
    """A one-shot search (`mincap.oneshot`, docs/search.md): one weight-shared supernet is trained on
    the train split (cached, resumable, its training counted in the run's `--timeout`), then each
    trial is one of its sub-networks -- depth, widths, bits per layer, sparsity -- extracted, batch
    norm re-estimated on train images, written, decoded and scored on validation in about a second;
    trials near the target are fine-tuned (distilled from the largest) and scored again. `[space]`,
    `[fidelity]` and `[early_stop]` are not used; `[seed_recipe]` is the recipe of `mincap summary
    --replicates`, which retrains the chosen network from scratch.

    The keys, in three groups: `enabled` and `seeds`; the supernet's training, `epochs` to `seed`
    (`mincap.oneshot.trainer.SupernetRecipe`); its space, `widths0` to `step_per_width`
    (`mincap.oneshot.space.SupernetSpace`); scoring and promotion, `side_bits` to `finetune_seed`
    (`mincap.oneshot.settings.OneshotSettings`). The recipe and the space are the supernet's cache
    key: a change trains another supernet."""

    enabled: bool = False  # run `mincap search` as a one-shot search
    # enqueue `[study] seeds` (each must be a sub-network of this space); false: what the search
    # finds, its sampler found
    seeds: bool = False
    epochs: int = checked(_R.epochs, ge=1)  # supernet training epochs
    batch_size: int = checked(_R.batch_size, ge=1)  # supernet batch size
    lr: float = checked(_R.lr, gt=0.0)  # supernet peak learning rate (one cycle)
    weight_decay: float = checked(_R.weight_decay, ge=0.0)  # supernet AdamW weight decay
    augment_shift: int = checked(_R.augment_shift, ge=0)  # supernet random shift, in pixels
    # of the supernet's epochs, the last ones quantization-aware
    qat_fraction: float = checked(_R.qat_fraction, ge=0.0, le=1.0)
    # random sub-networks per step, besides the largest and the smallest (the sandwich rule)
    n_random: int = checked(_R.n_random, ge=0)
    # weight of the largest's soft labels in the other sub-networks' loss (in-place distillation)
    distill_weight: float = checked(_R.distill_weight, ge=0.0, le=1.0)
    distill_temperature: float = checked(_R.distill_temperature, gt=0.0)  # of that distillation
    sort_channels: bool = _R.sort_channels  # sort channels by importance after each float epoch
    # the first epochs train the largest network alone (Once-for-All's first stage); 0: none
    largest_epochs: int = checked(_R.largest_epochs, ge=0, note="less than epochs")
    # progressive shrinking: over this share of the sandwich epochs the children are drawn from the
    # top of each range, the admitted share growing each epoch; 0: the whole space at once
    shrink_fraction: float = checked(_R.shrink_fraction, ge=0.0, le=1.0)
    seed: int = _R.seed  # the supernet's seed: initial weights, batches, sub-networks drawn
    widths0: tuple[int, int] = checked(_S.widths0, ge=1)  # the first conv's channels
    widths: tuple[int, int] = checked(_S.widths, ge=1)  # the other blocks' channels
    # the grid of both width ranges (a trial's widths are low, low + step, ..., high)
    width_step: int = checked(_S.width_step, ge=1, note="both width ranges lie on its grid")
    depth: tuple[int, int] = checked(_S.depth, ge=2)  # conv blocks, the first conv included
    bits: tuple[int, int] = checked(_S.bits, ge=2, le=8)  # per conv/linear layer (LSQ steps)
    kernel0: int = checked(_S.kernel0, ge=1)  # the first conv's kernel size (fixed)
    kernel: int = checked(_S.kernel, ge=1)  # the other blocks' kernel size (fixed)
    separable: bool = _S.separable  # depthwise-separable blocks after the first conv; false: plain
    # how many of the first blocks end in a 2x2 max pool
    pools: int = checked(_S.pools, ge=0, note="at most the smallest depth")
    padding: str = checked(_S.padding, choices=PADDINGS)  # every conv's padding
    # the head: "gap" (global average pool) or "flatten" (a linear layer reads every position)
    head: str = checked(_S.head, choices=HEADS)
    per_channel: bool = _S.per_channel  # one weight scale per output channel; false: per layer
    # learned steps per (layer, width, bits); false: per (layer, bits), shared by all widths
    step_per_width: bool = _S.step_per_width
    side_bits: int = checked(_O.side_bits, ge=2, le=8)  # the files' biases and scale exponents
    # train images that re-estimate a sub-network's batch norm
    calib_images: int = checked(_O.calib_images, ge=1)
    calib_seed: int = _O.calib_seed  # which train images calibrate (the same for every trial)
    # magnitude sparsity at extraction, a trial's choice among these
    sparsities: tuple[float, ...] = checked(_O.sparsities, ge=0.0, lt=1.0)
    promote: bool = _O.promote  # fine-tune promising trials (the second fidelity)
    # a trial this far below the target (or above it) and smaller than the smallest feasible file
    # so far is promoted
    promote_margin: float = checked(_O.promote_margin, ge=0.0, le=1.0)
    # ... and on the front of inherited scores (no earlier trial's inherited file as small and as
    # accurate); false: every such trial
    promote_front: bool = _O.promote_front
    # ... and only once the study holds this many completed trials (0: from the first)
    promote_after: int = checked(_O.promote_after, ge=0)
    finetune_epochs: int = checked(_O.finetune_epochs, ge=0)  # of a promoted trial (0: none)
    finetune_lr: float = checked(_O.finetune_lr, gt=0.0)  # fine-tuning learning rate
    finetune_batch_size: int = checked(_O.finetune_batch_size, ge=1)  # fine-tuning batch size
    # weight of the largest sub-network's soft labels in the fine-tuning loss
    finetune_distill_weight: float = checked(_O.finetune_distill_weight, ge=0.0, le=1.0)
    finetune_temperature: float = checked(_O.finetune_temperature, gt=0.0)  # its temperature
    finetune_seed: int = _O.seed  # the fine-tuning's seed

    def recipe(self) -> SupernetRecipe:
        return SupernetRecipe(**{f: getattr(self, k) for k, f in RECIPE_KEYS.items()})

    def space(self, in_shape: tuple[int, int, int] | None = None, n_classes: int | None = None) -> SupernetSpace:
        """The supernet's space, for the dataset's input shape and class count when given."""
        kw = {f: getattr(self, k) for k, f in SPACE_KEYS.items()}
        if in_shape is not None:
            kw.update(in_shape=tuple(in_shape), n_classes=int(n_classes))
        return SupernetSpace(**kw)

    def settings(self, target: float) -> OneshotSettings:
        return OneshotSettings(target=target, **{f: getattr(self, k) for k, f in SETTINGS_KEYS.items()})


def _same(cls: type, *skip: str, **renamed: str) -> dict[str, str]:
    """{table key: field of `cls`}: every field but `skip`, under its own name unless `renamed`.

    A field the table lacks keeps its dataclass's default (tests/config/test_oneshot_section.py
    fails until the table has it too)."""
    back = {v: k for k, v in renamed.items()}
    keys = {f.name for f in dataclasses.fields(Oneshot)}
    return {back.get(f.name, f.name): f.name for f in dataclasses.fields(cls)
            if f.name not in skip and back.get(f.name, f.name) in keys}


# Which key builds which field; `EXCLUDED` comes from elsewhere (tests check that this covers all).
EXCLUDED = {"space": ("in_shape", "n_classes"), "settings": ("target",)}
RECIPE_KEYS = _same(SupernetRecipe)
SPACE_KEYS = _same(SupernetSpace, *EXCLUDED["space"])
SETTINGS_KEYS = _same(OneshotSettings, *EXCLUDED["settings"], finetune_seed="seed")


def check_oneshot(o: Oneshot) -> None:
    """What no single key's bound says: the width grid, the pools, a space that holds a network."""
    for name in ("widths0", "widths"):
        lo, hi = getattr(o, name)
        if (hi - lo) % o.width_step:
            raise MincapError(f"oneshot.{name}: {lo}..{hi} is not on the grid of width_step {o.width_step}")
    if o.largest_epochs >= o.epochs:
        raise MincapError(f"oneshot.largest_epochs: {o.largest_epochs} is not less than epochs {o.epochs}")
    if o.pools > o.depth[0]:
        raise MincapError(f"oneshot.pools: {o.pools} is more than the smallest depth {o.depth[0]}")
    try:
        o.recipe()
        o.space()  # MNIST's 28x28 (the search checks again with the dataset's shape)
    except MincapError as err:
        raise MincapError(f"oneshot: {err}") from None


def preset_subnet(name: str, o: Oneshot, bits: int = 0) -> SubnetConfig:
    """Preset `name` (`mincap.nets.models.PRESETS`) as a sub-network of `o`'s space, every layer at
    `bits` (0: 4, clipped to the space) and the smallest sparsity; `MincapError` when it is none."""
    spec = PRESETS[name]
    space = o.space(spec.in_shape, spec.n_classes)
    cfg = SubnetConfig(tuple(c.channels for c in spec.convs), None, min(o.sparsities))
    if spec.family != "cnn" or not space.contains(cfg) or space.spec(cfg) != spec:
        raise MincapError(f"preset {name!r} is not a sub-network of the [oneshot] space (family, widths "
                          f"{o.widths0}/{o.widths} step {o.width_step}, depth {o.depth}, separable "
                          f"{o.separable}, pools {o.pools}, padding {o.padding})")
    b = min(max(bits or 4, space.bits[0]), space.bits[1])
    return cfg.quantized((b,) * space.n_layers(cfg.depth))
