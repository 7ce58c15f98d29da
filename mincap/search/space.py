"""The search space: one trial's architecture, training recipe and compression, drawn from `[space]`.

`sample_trial` is the only place that decides what a trial's parameters are. Each
draw says whether it is *structural* -- whether it fixes the layer structure and the
step count (family, depths, kernels, pools, head, batch norm, activation, batch size),
the things trials must share to train as one batched computation -- so the batched
search (`mincap.search.batched.ask_group`) learns a trial's structural parameters from
the sampling itself instead of from a second list of names.

With `[space] fit_input` every draw is a network for the input: a block that would leave no
pixels ends the network before it (its `k{i}` was drawn, nothing after it is) and a pool of a
1-pixel map is left out; the trial's `fitted_to_input` attribute says what was drawn and what
was built. The mapping from parameters to network stays a function, so the sampler, the
batched groups and a resumed study see the same network for the same parameters.

`preset_params` gives the parameters that make `sample_trial` reproduce a preset
(`mincap.nets.models.PRESETS`): the seed trials a study enqueues first.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import optuna

from mincap.config import AUGMENT_RANGES, CompressConfig, TrainConfig
from mincap.config.study import SeedRecipe, Space, StudyConfig, seed_settings
from mincap.errors import MincapError
from mincap.nets.models import PRESETS, Conv, Spec

__all__ = ["preset_params", "sample_trial", "seed_recipe_values"]


class _Draw:
    """Draws one trial's parameters from ranges and choice lists, noting the structural ones.

    A range with equal ends or a single choice is a fixed value: nothing is suggested,
    so the study records only what was really searched.
    """

    def __init__(self, trial) -> None:
        self.trial = trial
        self.structural: list[str] = []

    def int(self, name: str, rng: tuple[int, int], *, log: bool = False, structural: bool = False) -> int:
        lo, hi = rng
        if lo == hi:
            return lo
        self._note(name, structural)
        return self.trial.suggest_int(name, lo, hi, log=log and lo > 0)

    def float(self, name: str, rng: tuple[float, float], *, log: bool = False) -> float:
        lo, hi = rng
        if lo == hi:
            return lo
        return self.trial.suggest_float(name, lo, hi, log=log and lo > 0)

    def cat(self, name: str, choices: tuple, *, structural: bool = False):
        if len(choices) == 1:
            return choices[0]
        self._note(name, structural)
        return self.trial.suggest_categorical(name, list(choices))

    def _note(self, name: str, structural: bool) -> None:
        if structural:
            self.structural.append(name)


def sample_trial(trial, cfg: StudyConfig, in_shape: tuple[int, int, int], n_classes: int, *,
                 structural: list[str] | None = None) -> tuple[Spec, TrainConfig, CompressConfig]:
    """(spec, TrainConfig, CompressConfig) for one trial, drawn from `cfg.space`.

    `structural`, when given, receives the names of the structural parameters drawn.
    """
    sp = cfg.space
    d = _Draw(trial)
    family = d.cat("family", sp.families, structural=True)
    act = d.cat("activation", sp.activations, structural=True)
    if family == "cnn":
        depth = d.int("conv_depth", sp.conv_depth, structural=True)
        n_pools = min(depth, d.int("pools", sp.pools, structural=True))
        same = d.cat("padding", sp.padding, structural=True) == "same"
        convs = []
        h, w = in_shape[1:]
        for i in range(depth):
            k = int(d.cat(f"k{i}", sp.kernels, structural=True))
            pad, pool = k // 2 if same else 0, 2 if i < n_pools else 1
            if sp.fit_input:
                h, w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
                if convs and min(h, w) < 1:  # this block would leave no pixels: the network ends before it
                    break
                if min(h, w) < pool:  # a pool of a 1-pixel map: left out
                    pool = 1
                h, w = h // pool, w // pool
            # The first block may have its own, wider range: it sees the image at full resolution.
            c = d.int(f"c{i}", sp.channels0 if i == 0 and sp.channels0 != (0, 0) else sp.channels, log=True)
            # The first block sees one input channel: a depthwise conv there saves nothing.
            sep = bool(d.cat(f"sep{i}", sp.separable, structural=True)) if i > 0 else False
            convs.append(Conv(c, k, 1, pool, pad, separable=sep))
        if sp.fit_input and (len(convs) < depth or sum(c.pool > 1 for c in convs) < n_pools):
            trial.set_user_attr("fitted_to_input", {"conv_depth": len(convs), "pools": sum(c.pool > 1 for c in convs),
                                                    "drawn_conv_depth": depth, "drawn_pools": n_pools})
        head = d.cat("head", sp.heads, structural=True)
        n_hidden = d.int("hidden_depth", sp.hidden_depth, structural=True)
        hidden = tuple(d.int(f"h{i}", sp.hidden_width, log=True) for i in range(n_hidden))
        bn = bool(d.cat("batch_norm", sp.batch_norm, structural=True))
        try:
            spec = Spec("cnn", tuple(convs), hidden, act, bn, head).with_data(in_shape, n_classes)
        except MincapError as err:  # e.g. unpadded blocks that shrink the image to nothing: no training needed
            trial.set_user_attr("stop_reason", f"not a network: {err}")
            raise optuna.TrialPruned(str(err)) from None
    else:
        depth = d.int("mlp_depth", sp.mlp_depth, structural=True)
        hidden = tuple(d.int(f"m{i}", sp.mlp_width, log=True) for i in range(depth))
        spec = Spec("mlp", (), hidden, act)
    spec = spec.with_data(in_shape, n_classes)
    n_layers = spec.n_weight_layers()
    if sp.per_layer_bits:
        bits = tuple(d.int(f"bits{i}", sp.bits) for i in range(n_layers))
    else:
        bits = (d.int("bits", sp.bits),) * n_layers
    epochs = d.int("epochs", sp.epochs)
    train_cfg = TrainConfig(
        epochs=epochs,
        # The step count per epoch must agree inside a batched group.
        batch_size=int(d.cat("batch_size", sp.batch_size, structural=True)),
        lr=d.float("lr", sp.lr, log=True),
        weight_decay=d.float("weight_decay", sp.weight_decay, log=True),
        augment_shift=d.int("augment", sp.augment),
        seed=cfg.study.seed + trial.number,
        **{key: d.float(key, getattr(sp, key)) for key in AUGMENT_RANGES},  # rotate_deg, ...
    )
    prune = float(d.cat("prune_ratio", sp.prune_ratios)) if sp.prune_ratios else d.float("prune_ratio", sp.prune_ratio)
    comp = CompressConfig(
        bits_per_layer=bits,
        qat_epochs=max(1, round(d.float("qat_fraction", sp.qat_fraction) * epochs)),
        prune_ratio=prune,
        prune_steps=d.int("prune_steps", sp.prune_steps) if prune > 0 else 1,
        prune_criterion=d.cat("prune_criterion", sp.prune_criteria) if prune > 0 else "l1",
        prune_finetune_epochs=d.int("finetune_epochs", sp.finetune_epochs) if prune > 0 else 0,
        quantizer=d.cat("quantizer", sp.quantizers),
        per_channel=d.cat("scales", sp.scales, structural=True) == "channel",  # a batched group shares it
        anneal_epochs=d.int("anneal_epochs", sp.anneal_epochs),
        path=d.cat("path", sp.paths),
    )
    if comp.path and not comp.prune_finetune_epochs:  # a path's steps fine-tune: at least one epoch each
        comp = replace(comp, prune_finetune_epochs=1)
    if structural is not None:
        structural.extend(d.structural)
    return spec, train_cfg, comp


def seed_recipe_values(r: SeedRecipe, sp: Space) -> dict[str, Any]:
    """The training values of recipe `r` (epochs, batch_size, lr, weight_decay, augment,
    qat_fraction), each unset one by the rule on space `sp`: the longest training, the smallest
    batch, the geometric middle lr, the lowest weight decay, the middle shift, the largest QAT
    fraction. The seed presets' recipe, and the from-scratch recipe of a one-shot trial's
    replicates (`mincap.search.replicates`)."""
    return {"epochs": r.epochs or sp.epochs[1], "batch_size": r.batch_size or sp.batch_size[0],
            "lr": r.lr or math.sqrt(sp.lr[0] * sp.lr[1]), "weight_decay": r.weight_decay or sp.weight_decay[0],
            "augment": r.augment if r.augment != -1 else sp.augment[0] + (sp.augment[1] - sp.augment[0]) // 2,
            "qat_fraction": r.qat_fraction or sp.qat_fraction[1]}


def preset_params(name: str, cfg: StudyConfig) -> dict[str, Any]:
    """Parameters that make `sample_trial` reproduce preset `name`: a known-good seed trial."""
    preset, r, extras = seed_settings(name, cfg.seed_recipe)
    spec, sp = PRESETS[preset], cfg.space
    p: dict[str, Any] = {"family": spec.family, "activation": spec.activation}
    if spec.family == "cnn":
        p.update(conv_depth=len(spec.convs), pools=sum(c.pool > 1 for c in spec.convs), head=spec.head,
                 hidden_depth=len(spec.hidden), batch_norm=spec.batch_norm,
                 padding="valid" if all(c.pad == 0 for c in spec.convs) else "same")
        for i, c in enumerate(spec.convs):
            p[f"k{i}"], p[f"c{i}"] = c.kernel, c.channels
            if i > 0:
                p[f"sep{i}"] = c.separable
        p.update({f"h{i}": h for i, h in enumerate(spec.hidden)})
    else:
        p["mlp_depth"] = len(spec.hidden)
        p.update({f"m{i}": h for i, h in enumerate(spec.hidden)})
    n_layers = spec.n_weight_layers()
    # 4-bit weights, no pruning, the longest training: a design that usually reaches the target;
    # the study's [seed_recipe] overrides each value (checked to lie in the space).
    bits = r.bits or min(max(4, sp.bits[0]), sp.bits[1])
    p.update({f"bits{i}": bits for i in range(n_layers)} if sp.per_layer_bits else {"bits": bits})
    p.update(seed_recipe_values(r, sp))
    p.update(prune_ratio=min(sp.prune_ratios or (sp.prune_ratio[0],)),
             quantizer=sp.quantizers[0], scales=extras.get("scales", sp.scales[0]),
             anneal_epochs=sp.anneal_epochs[1], path=sp.paths[extras.get("path", 0)])
    # Searched augmentation ranges only (a fixed one is no parameter: the enqueued seeds of a study
    # without them stay the same dict), each at its low end, the least distortion.
    ranges = {key: getattr(sp, key) for key in AUGMENT_RANGES}
    p.update({key: lo for key, (lo, hi) in ranges.items() if lo != hi})
    return p
