"""A one-shot search inside `mincap search` (`[oneshot] enabled`): the supernet first, then its trials.

`mincap.search.run.run_search` calls `prepare_supernet` before any trial: the supernet of the
study's `[oneshot]` space and recipe is loaded when its cache file is finished, resumed from
its last epoch when a run was stopped, else trained (`mincap.oneshot.trainer.train_supernet`,
its own progress bar or plain lines). Its training counts against the run's `--timeout`: the
trainer stops at the first step past the deadline, losing at most the epoch in progress (it
checkpoints every epoch); the next `mincap search` resumes there.

Then each worker (`run_worker`, in this process or one of `--workers K` processes) loads the
cached supernet (`load_supernet`) and runs the study's sampler on `OneshotObjective`
(`oneshot_objective`): every trial one sub-network, written, decoded and scored on validation.
The study's seed presets are enqueued only with `[oneshot] seeds = true`, as sub-networks
(`oneshot_seed_params`). Nothing here reads the test set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mincap import data
from mincap.config.oneshot import preset_subnet
from mincap.config.study import StudyConfig, seed_settings
from mincap.data import Splits
from mincap.errors import MincapError, NonFiniteLoss
from mincap.oneshot.trainer import SupernetRun, supernet_dirs, supernet_name, train_supernet
from mincap.oneshot.trial import OneshotObjective
from mincap.training.engine import setup_threads

__all__ = ["SUPERNETS_ATTR", "SupernetStatus", "load_splits", "load_supernet", "oneshot_objective",
           "oneshot_seed_params", "prepare_supernet", "record_supernet", "supernet_file"]

SUPERNETS_ATTR = "oneshot/supernets"  # study user attribute: {cache key: the supernet's record}
_READY: dict[str, SupernetRun] = {}  # supernets this process trained or loaded, by cache key


@dataclass(frozen=True)
class SupernetStatus:
    """Where the study's supernet stands after `prepare_supernet`."""

    key: str
    path: str | None  # its cache file
    epochs_done: int
    epochs: int
    train_time_s: float  # all its epochs, across runs
    how: str  # "cached" (loaded), "trained" (this run, maybe resumed), "stopped" (by the deadline)

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_splits(cfg: StudyConfig, data_dir=None, device="cpu") -> Splits:
    return data.load(cfg.study.dataset, root=data_dir, n_val=cfg.data.n_val,
                     split_seed=cfg.data.split_seed, limit=cfg.data.limit or None, device=device)


def _args(cfg: StudyConfig, splits: Splits):
    """(space, recipe, the split's description) of the study's supernet on `splits`."""
    space = cfg.oneshot.space(splits.in_shape, splits.n_classes)
    split = {"n_val": cfg.data.n_val, "split_seed": cfg.data.split_seed, "limit": cfg.data.limit or None}
    return space, cfg.oneshot.recipe(), split


def supernet_file(cfg: StudyConfig, splits: Splits, root=None) -> tuple[str, Path | None, int, float]:
    """(cache key, cache file or None, epochs it holds, their training seconds) of the study's
    supernet, read without training anything."""
    space, recipe, split = _args(cfg, splits)
    key = supernet_name(splits, space, recipe, **split)  # the trainer's own key
    for d in supernet_dirs(root):
        path = d / key
        if not path.is_file():
            continue
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError):  # unreadable: the trainer starts it afresh
            continue
        return key, path, int(blob["epoch"]), float(blob["train_time_s"])
    return key, None, 0, 0.0


def _train(cfg: StudyConfig, splits: Splits, device, *, root, progress: bool,
           deadline: float | None = None) -> SupernetRun:
    space, recipe, split = _args(cfg, splits)
    try:
        return train_supernet(space, splits, recipe, root=root, device=device, progress=progress,
                              deadline=deadline, **split)
    except NonFiniteLoss as err:
        raise MincapError(f"the supernet's training diverged: {err}", exit_code=1) from None


def prepare_supernet(cfg: StudyConfig, *, data_dir=None, device="cpu", progress: bool = True,
                     deadline: float | None = None, workers: int = 1) -> SupernetStatus:
    """The study's supernet, cached and finished unless the deadline stopped its training first."""
    splits = load_splits(cfg, data_dir, device)
    recipe = cfg.oneshot.recipe()
    key, path, done, secs = supernet_file(cfg, splits, data_dir)
    if done >= recipe.epochs:
        return SupernetStatus(key, str(path), done, recipe.epochs, secs, "cached")
    setup_threads()
    run = _train(cfg, splits, device, root=data_dir, progress=progress, deadline=deadline)
    if run.stopped:
        return SupernetStatus(run.key, None if run.cache_path is None else str(run.cache_path),
                              run.epochs_done, recipe.epochs, run.train_time_s, "stopped")
    _READY[run.key] = run
    if run.cache_path is None and workers > 1:
        raise MincapError(f"the supernet could not be cached (no writable folder among "
                          f"{', '.join(map(str, supernet_dirs(data_dir)))}): --workers {workers} "
                          f"needs it; give a writable --data-dir or run one worker")
    cache = None if run.cache_path is None else str(run.cache_path)
    return SupernetStatus(run.key, cache, recipe.epochs, recipe.epochs, run.train_time_s, "trained")


def record_supernet(study, status: SupernetStatus, cfg: StudyConfig) -> None:
    """Keep the supernet's record in the study (its training time is part of the search's)."""
    if not status.finished:
        return
    known = dict(study.user_attrs.get(SUPERNETS_ATTR) or {})
    space = cfg.oneshot.space()
    known[status.key] = {"epochs": status.epochs, "train_time_s": round(status.train_time_s, 1),
                         "recipe": cfg.oneshot.recipe().to_dict(),
                         "space": {k: v for k, v in space.to_dict().items() if k not in ("in_shape", "n_classes")}}
    study.set_user_attr(SUPERNETS_ATTR, known)


def load_supernet(cfg: StudyConfig, splits: Splits, device, data_dir=None) -> SupernetRun:
    """The study's finished supernet: the one this process holds, else from its cache file."""
    key, _, done, _ = supernet_file(cfg, splits, data_dir)
    if key in _READY:
        return _READY[key]
    epochs = cfg.oneshot.epochs
    if done < epochs:
        raise MincapError(f"supernet {key} holds {done} of {epochs} epochs: `mincap search` trains it "
                          f"before the trials")
    run = _train(cfg, splits, device, root=data_dir, progress=False)  # a finished file: loaded
    _READY[key] = run
    return run


def oneshot_objective(cfg: StudyConfig, splits: Splits, device, store, data_dir=None,
                      deadline: float | None = None) -> OneshotObjective:
    run = load_supernet(cfg, splits, device, data_dir)
    return OneshotObjective(run, splits, store, cfg.oneshot.settings(cfg.study.target), device=device,
                                          deadline=deadline)


def oneshot_seed_params(name: str, cfg: StudyConfig) -> dict[str, Any]:
    """The parameters of seed `name` as a sub-network (`mincap.oneshot.trial.sample_subnet`'s)."""
    preset, recipe, _ = seed_settings(name, cfg.seed_recipe)
    sub = preset_subnet(preset, cfg.oneshot, recipe.bits)
    p: dict[str, Any] = {"conv_depth": sub.depth}
    p.update({f"c{i}": w for i, w in enumerate(sub.widths)})
    p.update({f"bits{i}": b for i, b in enumerate(sub.bits)})
    p["sparsity"] = sub.sparsity
    return p
