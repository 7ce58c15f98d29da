"""The robustness of a study's answer: its chosen configuration retrained with K more seeds.

Small networks vary with their initialization: one lucky seed can carry a configuration
over the target. `replicate_trial` rebuilds a trial's configuration from its parameters
(through `sample_trial`, the only place that maps parameters to a network and recipe,
checked against the trial's recorded spec), trains it again with K other seeds, each
run exported, decoded and evaluated on the *validation* split exactly as a trial is,
and counts how many runs reach the target. The test set is never read.

The result is stored in the study (user attribute `replicates/<trial>`) after every
run, so it is computed once: asking again for K or fewer returns the stored runs, asking
for more trains only the missing seeds, and an interrupted run keeps what it finished.
`mincap summary --replicates K` calls this for the chosen trial.

A one-shot trial (`mincap.oneshot`: a sub-network of a supernet, its weights inherited) has no
training recipe of its own: its network (the sub-network's `spec`, batch norm unfolded) is trained
FROM SCRATCH by the study's `[seed_recipe]` (unset values by the rule on `[space]`,
`mincap.search.space.seed_recipe_values`) with LSQ at the trial's bits per layer, its scales as
the supernet's, its sparsity, and the file's side information at `[oneshot] side_bits`
(`oneshot_config`); the summary then reports how far the one-shot figure lies from these.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import optuna

from mincap import data
from mincap.config import CompressConfig, TrainConfig
from mincap.config.study import StudyConfig
from mincap.data import Splits
from mincap.errors import MincapError
from mincap.nets.models import Spec
from mincap.search.path_trial import train_trial
from mincap.search.space import sample_trial, seed_recipe_values

__all__ = ["SEED_STRIDE", "oneshot_config", "replicate_seed", "replicate_trial", "replicates_key", "stored_replicates", "train_once",
           "trial_config"]

SEED_STRIDE = 100_003  # replicate i of a trial trains with seed + (i + 1) * stride: never another trial's seed


def replicates_key(trial_number: int) -> str:
    return f"replicates/{trial_number}"


def replicate_seed(base_seed: int, i: int) -> int:
    return base_seed + (i + 1) * SEED_STRIDE


def oneshot_config(trial, cfg: StudyConfig) -> tuple[Spec, TrainConfig, CompressConfig]:
    """The from-scratch (spec, TrainConfig, CompressConfig) of a one-shot trial (module docstring)."""
    a = trial.user_attrs
    spec = Spec.from_json(a["spec"])
    v = seed_recipe_values(cfg.seed_recipe, cfg.space)
    train_cfg = TrainConfig(epochs=v["epochs"], batch_size=v["batch_size"], lr=v["lr"],
                            weight_decay=v["weight_decay"], augment_shift=v["augment"],
                            seed=cfg.study.seed + trial.number)
    side = cfg.oneshot.side_bits
    comp = CompressConfig(bits_per_layer=tuple(a["bits_per_layer"]) or None, quantizer="lsq",
                          per_channel=cfg.oneshot.per_channel, sparsity=float(a.get("sparsity", 0.0)),
                          qat_epochs=max(1, round(v["qat_fraction"] * v["epochs"])),
                          path="" if side == 8 else f"side={side}")  # the export's side bits: 8 unless a step
    return spec, train_cfg, comp


def trial_config(trial, cfg: StudyConfig, in_shape: tuple[int, int, int],
                 n_classes: int) -> tuple[Spec, TrainConfig, CompressConfig]:
    """The (spec, TrainConfig, CompressConfig) a stored trial trained with, rebuilt from its parameters
    (a one-shot trial's: its from-scratch training, `oneshot_config`)."""
    if "oneshot_config" in trial.user_attrs:
        return oneshot_config(trial, cfg)
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    try:
        spec, train_cfg, comp = sample_trial(fixed, cfg, in_shape, n_classes)
    except ValueError as err:  # FixedTrial: a parameter the current [space] asks for is missing
        raise MincapError(f"trial {trial.number}: the study file's space no longer fits its parameters ({err})") \
            from None
    recorded = trial.user_attrs.get("spec")
    if recorded is not None and Spec.from_json(recorded) != spec:
        raise MincapError(f"trial {trial.number}: the study file's space rebuilds another network than it trained "
                          f"({spec.to_json()} vs {recorded})")
    return spec, train_cfg, comp


def train_once(spec: Spec, splits: Splits, train_cfg: TrainConfig, comp: CompressConfig, *, target: float,
               device="cpu") -> tuple[float, int]:
    """(validation accuracy of the decoded artifact, artifact bits) of one full training run.

    The same pipeline as a search trial's full stage (`mincap.search.path_trial.train_trial`):
    with a compression path, its smallest step meeting the target, else its most accurate one.
    """
    res, _ = train_trial(spec, splits, train_cfg, comp, target=target, device=device)
    return float(res.val_acc), int(res.size["artifact_bits"])


def replicate_trial(study, trial, cfg: StudyConfig, *, k: int, splits: Splits | None = None, data_dir=None,
                    device="cpu", progress=None) -> dict[str, Any]:
    """Retrain `trial`'s configuration with `k` more seeds (validation only); stored, never recomputed.

    Returns {"trial", "k", "target", "seeds", "val_acc", "artifact_bits", "n_reach"} for the
    first `k` replicates. `progress(i, k, val_acc)` is called after each new run.
    """
    if k < 1:
        raise MincapError("--replicates must be >= 1")
    key = replicates_key(trial.number)
    stored = study.user_attrs.get(key) or {}
    runs: list[dict] = list(stored.get("runs", []))
    target = cfg.study.target
    if len(runs) < k:
        if splits is None:
            splits = data.load(cfg.study.dataset, root=data_dir, n_val=cfg.data.n_val,
                               split_seed=cfg.data.split_seed, limit=cfg.data.limit or None, device=device)
        spec, train_cfg, comp = trial_config(trial, cfg, splits.in_shape, splits.n_classes)
        for i in range(len(runs), k):
            seed = replicate_seed(train_cfg.seed, i)
            val_acc, bits = train_once(spec, splits, replace(train_cfg, seed=seed), comp, target=target, device=device)
            runs.append({"seed": seed, "val_acc": val_acc, "artifact_bits": bits})
            study.set_user_attr(key, {"runs": runs})  # after every run: an interruption keeps it
            if progress is not None:
                progress(i + 1, k, val_acc)
    return _result(trial.number, runs[:k], target)


def stored_replicates(study, trial_number: int, target: float) -> dict[str, Any] | None:
    """The replicates an earlier request stored for the trial (all of them), or None."""
    stored = study.user_attrs.get(replicates_key(trial_number))
    return _result(trial_number, stored["runs"], target) if stored and stored.get("runs") else None


def _result(trial_number: int, runs: list[dict], target: float) -> dict[str, Any]:
    return {
        "trial": trial_number, "k": len(runs), "target": target,
        "seeds": [r["seed"] for r in runs], "val_acc": [r["val_acc"] for r in runs],
        "artifact_bits": [r["artifact_bits"] for r in runs],
        "n_reach": sum(r["val_acc"] >= target for r in runs),
    }
