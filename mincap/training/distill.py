"""Teachers for distillation: trained once per (dataset, split, recipe), cached, never in the artifact.

A teacher is an ordinary float mincap network trained with `mincap.training.engine.train` on
the *train* split only and checked on the validation split (its accuracy is stored
with it; the test set is never read). It is cached as a torch state dict under
`<data-dir>/mincap-cache/teacher/` (else the per-user cache, like the entropy
cache, `mincap.entropy.cache`), keyed by the dataset, the split (n_val, split_seed,
limit, and a fingerprint of the train labels) and the recipe (teacher spec and
`TrainConfig`), so a changed split or recipe never reuses a stale teacher.

Students use its logits as soft targets (`TrainConfig.distill_weight`,
`distill_temperature`). The teacher runs on each augmented batch inside
`mincap.training.engine.train` rather than on precomputed logits: training shifts every image
by a random +-1 px, and precomputed logits of unshifted images would be targets for
the wrong inputs. The extra forward costs 1.28x an epoch (`bench/distill_cost.py`: tiny student,
small teacher, 1 thread, shared 2-core CPU), which was kept rather than losing augmentation.
The artifact holds the student alone; decoding never needs the teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mincap.config import TrainConfig
from mincap.data import Splits, data_dir
from mincap.errors import MincapError
from mincap.nets.models import parse_arch
from mincap.training.engine import evaluate, init_model, train

__all__ = ["DEFAULT_TEACHER", "get_teacher", "teacher_dirs", "teacher_key"]

DEFAULT_TEACHER = "small"


def teacher_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Cache folders, preferred first: beside the data, then the per-user cache."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mincap"
    return list(dict.fromkeys([data_dir(root) / "mincap-cache" / "teacher", user / "mincap-cache" / "teacher"]))


def _split_fingerprint(splits: Splits) -> str:
    h = hashlib.blake2b(digest_size=8)
    for t in (splits.train.y, splits.val.y):
        a = np.ascontiguousarray(t.cpu().numpy())
        h.update(f"{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def teacher_key(dataset: str, spec_json: str, cfg: TrainConfig, *, n_val: int, split_seed: int,
                limit: int | None = None, split_fp: str = "") -> str:
    """The cache file name of a teacher: dataset, split and recipe all in the hash."""
    blob = json.dumps({"dataset": dataset, "n_val": n_val, "split_seed": split_seed, "limit": limit,
                       "split": split_fp, "spec": spec_json, "cfg": cfg.to_dict()}, sort_keys=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
    return f"{safe}-teacher-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"


def get_teacher(arch: str, splits: Splits, *, epochs: int = 15, seed: int = 0, n_val: int | None = None,
                split_seed: int = 0, limit: int | None = None, root=None, device=None, use_cache: bool = True,
                verbose: bool = True) -> nn.Module:
    """The cached teacher for (dataset, split, recipe), training it on `splits.train` first if needed.

    Returns the float network in eval mode with `.val_acc` (its validation accuracy)
    and `.cache_path` set. `n_val`/`split_seed`/`limit` describe how `splits` was
    drawn (they key the cache together with a fingerprint of the split's labels).
    """
    spec = parse_arch(arch).with_data(splits.in_shape, splits.n_classes)
    cfg = replace(TrainConfig(), epochs=epochs, seed=seed)
    name = teacher_key(splits.name, spec.to_json(), cfg, n_val=len(splits.val) if n_val is None else n_val,
                       split_seed=split_seed, limit=limit, split_fp=_split_fingerprint(splits))
    device = device or splits.train.x.device
    model = init_model(spec, seed, device)
    if use_cache:
        for d in teacher_dirs(root):
            try:
                blob = torch.load(d / name, map_location=device, weights_only=True)
            except (OSError, RuntimeError, EOFError):
                continue
            model.load_state_dict(blob["state"])
            model.eval()
            model.val_acc, model.cache_path = float(blob["val_acc"]), d / name
            return model
    if verbose:
        print(f"mincap: training teacher {arch} ({epochs} epochs, train split only) for distillation",
              file=sys.stderr)
    train(model, splits, cfg)
    val_acc, _ = evaluate(model, splits.val)
    model.eval()
    model.val_acc, model.cache_path = val_acc, None
    if use_cache:
        for d in teacher_dirs(root):
            try:
                d.mkdir(parents=True, exist_ok=True)
                tmp = d / f".{name}.{os.getpid()}"
                torch.save({"state": model.state_dict(), "val_acc": val_acc, "arch": spec.to_json(),
                            "epochs": epochs}, tmp)
                os.replace(tmp, d / name)
                model.cache_path = d / name
                break
            except OSError:
                continue
    if verbose:
        print(f"mincap: teacher validation accuracy {val_acc:.4f}", file=sys.stderr)
    return model


def check_distill(weight: float, temperature: float) -> None:
    if not 0.0 <= weight <= 1.0 or temperature <= 0:
        raise MincapError("--distill-weight must be in [0, 1] and --distill-temperature > 0")
