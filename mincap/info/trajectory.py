"""`mincap info --trajectory`: train an MLP and follow each layer on the information plane.

The network is a mincap MLP (`Spec(family="mlp")`, tanh or ReLU, widths as options) trained
by the project's engine (`mincap.training.engine.train`: AdamW, one-cycle schedule, no augmentation).
At a log-spaced set of epochs (and before the first) the activations of every layer on a
fixed, seeded sample of the *train* split are kept; afterwards (I(X;T), I(T;Y)) is computed
for each kept epoch under any number of estimator settings (bins, noise variance), so the
bins/sigma variants come from one training run. Binning ranges: tanh's [-1, 1]; an unbounded
layer's min..max over all kept epochs (fixed across epochs).

Tasks: `toy12`, a 12-bit task in the spirit of Shwartz-Ziv & Tishby (2017): all 4,096
patterns of 12 bits placed on the vertices of an icosahedron, label 1 when a rotation-
invariant pair sum of the 'on' vertices exceeds a threshold chosen to balance the classes
(their data file is not used; the construction is ours), split 85/15 into train and
validation; and `mnist`, a seeded subsample of the MNIST train split.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mincap.config import TrainConfig
from mincap.data import Split, Splits, load
from mincap.errors import MincapError
from mincap.info.activations import layer_activations, sample_indices
from mincap.info.estimators import label_entropy_bits, layer_mi
from mincap.nets.models import Spec
from mincap.training.engine import evaluate, init_model, train

__all__ = ["TASKS", "TrajectoryConfig", "compression", "record_epochs", "run_trajectory", "settings_mi", "toy12"]

TASKS = ("toy12", "mnist")


@dataclass(frozen=True)
class TrajectoryConfig:
    task: str = "toy12"
    activation: str = "tanh"
    hidden: tuple[int, ...] = (10, 7, 5, 4, 3)  # Shwartz-Ziv & Tishby's 12-10-7-5-4-3-2
    epochs: int = 2000
    n_train: int = 5000  # mnist: train images used (toy12 uses all its train patterns)
    n_info: int = 1000  # train inputs the MI is computed on
    n_points: int = 40  # kept epochs, log-spaced in 1..epochs, plus epoch 0
    batch_size: int = 256
    lr: float = 0.003
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MincapError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.activation not in ("tanh", "relu"):
            raise MincapError(f"--activation must be tanh or relu, got {self.activation!r}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise MincapError("--widths: one or more positive layer widths, e.g. 10,7,5,4,3")
        if self.epochs < 1 or self.n_info < 2 or self.n_points < 1 or self.n_train < 2:
            raise MincapError("--epochs, --points >= 1; --samples, --n-train >= 2")


def toy12(seed: int = 0) -> Splits:
    """The 12-bit task: 4,096 patterns (uint8 0/255), a balanced rotation-invariant label, 85/15 split."""
    phi = (1 + math.sqrt(5)) / 2
    verts = np.array([p for a, b in itertools.product((-1, 1), (-phi, phi))
                      for p in ((0, a, b), (a, b, 0), (b, 0, a))], dtype=float)
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    bits = ((np.arange(4096)[:, None] >> np.arange(12)) & 1).astype(float)
    dots = verts @ verts.T
    # Invariant under the icosahedron's rotations: a function of the angles between 'on' vertices.
    weight = dots ** 3 + 0.5 * dots
    f = np.einsum("ni,ij,nj->n", bits, np.triu(weight, 1), bits) + 0.37 * bits.sum(1)
    cuts = np.unique(f)
    theta = cuts[np.argmin([abs((f > c).mean() - 0.5) for c in cuts])]
    y = (f > theta).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(4096)
    tr, va = np.sort(perm[614:]), np.sort(perm[:614])
    x = torch.from_numpy((bits * 255).astype(np.uint8)).reshape(4096, 1, 1, 12)
    yt = torch.from_numpy(y)
    return Splits("toy12", Split(x[tr], yt[tr]), Split(x[va], yt[va]), 2)


def record_epochs(epochs: int, n_points: int) -> list[int]:
    """Epoch 0 and up to `n_points` log-spaced epochs in 1..epochs (the last always kept)."""
    pts = np.unique(np.round(np.logspace(0, math.log10(epochs), n_points)).astype(int))
    return [0, *sorted(set(pts.tolist()) | {epochs})]


def settings_mi(acts: list[list[np.ndarray]], y: np.ndarray, bounds: list, settings: list[dict],
                on_step=None) -> list[dict]:
    """For each setting {estimator, bins?, noise_var?}: i_xt / i_ty arrays (kept epoch x layer);
    `on_step()` is called after each (setting, kept epoch)."""
    # An unbounded layer (ReLU, logits) is binned over its range across *all* kept epochs, so a
    # bin is the same interval at every epoch (as with Saxe et al.'s fixed bin width); a range
    # refitted per epoch would widen the bins as activations grow and fake a compression.
    fixed = [b if b is not None else (min(float(e[k].min()) for e in acts), max(float(e[k].max()) for e in acts))
             for k, b in enumerate(bounds)]
    out = []
    for s in settings:
        kw = {k: s[k] for k in ("bins", "noise_var") if k in s}
        rows = []
        for layers in acts:
            rows.append(layer_mi(layers, y, s["estimator"], bounds=fixed, **kw))
            if on_step is not None:
                on_step()
        out.append({**s, "i_xt_bits": [[r["i_xt_bits"] for r in e] for e in rows],
                    "i_ty_bits": [[r["i_ty_bits"] for r in e] for e in rows],
                    "i_next_bits": [[r["i_next_bits"] for r in e[:-1]] for e in rows]})
    return out


def run_trajectory(cfg: TrajectoryConfig, settings: list[dict], *, on_epoch=None, on_mi_step=None,
                   data_dir: str | None = None) -> dict:
    """Train, keep each layer's activations at the kept epochs, then compute MI for each setting
    (`on_epoch(stats)` after each epoch, `on_mi_step()` after each setting x kept epoch)."""
    torch.set_num_threads(1)
    if cfg.task == "toy12":
        splits = toy12(cfg.seed)
    else:
        splits = load("mnist", root=data_dir, limit=cfg.n_train)
    spec = Spec(family="mlp", hidden=cfg.hidden, activation=cfg.activation,
                in_shape=tuple(splits.in_shape), n_classes=splits.n_classes)
    idx = torch.from_numpy(sample_indices(len(splits.train), cfg.n_info, cfg.seed))
    x_info, y_info = splits.train.x[idx], splits.train.y[idx].numpy()
    model = init_model(spec, cfg.seed)
    keep = set(record_epochs(cfg.epochs, cfg.n_points))
    acts: list[list[np.ndarray]] = []
    kept: list[int] = []
    names: list[str] = []
    bounds: list = []
    accs: list[dict] = []

    def snapshot(epoch: int, val_acc: float) -> None:
        layers = layer_activations(model, x_info)
        names[:] = [lay.name for lay in layers]
        bounds[:] = [lay.bounds for lay in layers]
        acts.append([lay.values for lay in layers])
        kept.append(epoch)
        accs.append({"epoch": epoch, "val_acc": val_acc,
                     "train_acc": evaluate(model, Split(x_info, torch.from_numpy(y_info)))[0]})

    snapshot(0, evaluate(model, splits.val)[0])
    t0 = time.perf_counter()
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=0.0,
                       augment_shift=0, seed=cfg.seed)

    def each_epoch(stats) -> None:
        if stats.epoch in keep:
            snapshot(stats.epoch, stats.val_acc)
        if on_epoch is not None:
            on_epoch(stats)

    train(model, splits, tcfg, on_epoch=each_epoch)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = settings_mi(acts, y_info, bounds, settings, on_step=on_mi_step)
    return {
        "config": {**asdict(cfg), "hidden": list(cfg.hidden)}, "spec": spec.to_json(), "layers": names,
        "epochs": kept, "accuracy": accs, "n_samples": len(y_info), "ceiling_xt_bits": math.log2(len(y_info)),
        "h_y_bits": label_entropy_bits(y_info), "settings": results,
        "train_time_s": round(train_s, 1), "mi_time_s": round(time.perf_counter() - t1, 1),
    }


def compression(traj: dict, setting: dict) -> list[dict]:
    """Per layer: the epoch where I(X;T) peaked, the peak, the final value and the drop since
    the peak (bits). A drop well above the estimator's noise while I(T;Y) holds is the
    'compression phase' of Shwartz-Ziv & Tishby."""
    xt = np.array(setting["i_xt_bits"])
    ty = np.array(setting["i_ty_bits"])
    out = []
    for k, name in enumerate(traj["layers"]):
        peak = int(xt[:, k].argmax())
        out.append({"layer": name, "peak_epoch": traj["epochs"][peak], "peak_xt_bits": float(xt[peak, k]),
                    "final_xt_bits": float(xt[-1, k]), "drop_bits": float(xt[peak, k] - xt[-1, k]),
                    "final_ty_bits": float(ty[-1, k])})
    return out
