"""One training run end to end, as `mincap train` does it, returned as a JSON-able record.

`run_experiment(Experiment(...))` loads the train/validation split, trains the teacher when
distillation is asked for (cached, `mincap.training.distill`), then trains the network: plainly
(float), compressed (`mincap.compression.qat.train_compressed`: QAT, pruning, export, decode), or
along a compression path (`mincap.compression.path.compression_path`: every step exported, decoded and
evaluated on validation, the smallest step reaching `target` chosen). It writes the chosen
artifact and reports validation accuracy; the test set is read only when `test=True`, and
the record then says that figure is a report, not a basis for any choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from mincap import data
from mincap.compression.path import compression_path
from mincap.compression.qat import train_compressed
from mincap.config import CompressConfig, TrainConfig, parse_steps
from mincap.errors import MincapError
from mincap.evaluation.holdout import final_test_accuracy
from mincap.format import container as artifact
from mincap.format.container import decode
from mincap.nets import models
from mincap.training import engine as train
from mincap.training.distill import check_distill, get_teacher

__all__ = ["Experiment", "Loaded", "NoStepReachesTarget", "load_experiment", "run_experiment", "total_epochs"]

TEST_NOTE = "test accuracy is a report on this finished network, not for choosing among runs"


@dataclass(frozen=True)
class Experiment:
    """Everything one `mincap train` run needs (the CLI's options, as a library call)."""

    arch: str = "tiny"  # a preset name or a JSON spec
    dataset: str = "mnist"
    data_dir: str | None = None
    n_val: int = 5000
    split_seed: int = 0
    limit: int | None = None
    device: str = "auto"
    threads: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    compress: CompressConfig | None = None  # None: a float network, no artifact
    path: str | None = None  # compression path steps (`mincap.compression.path.parse_steps`)
    target: float | None = None  # with `path`: the validation accuracy the chosen step must reach
    path_dir: str | None = None  # with `path`: write every step's artifact here
    teacher: str | None = None  # distill from this architecture (trained once, cached)
    teacher_epochs: int = 15
    output: str | None = None  # write the chosen artifact here (.mincap)
    test: bool = False  # also report test accuracy (never used to choose)

    def __post_init__(self) -> None:
        models.parse_arch(self.arch)  # bad input fails before any data is read
        if self.teacher:
            models.parse_arch(self.teacher)
            check_distill(self.train.distill_weight, self.train.distill_temperature)
        if self.output and not self.output.endswith(".mincap"):
            raise MincapError(f"-o: the artifact file must end in .mincap, got {self.output}")
        if (self.target is not None or self.path_dir) and not self.path:
            raise MincapError("--target and --path-dir need --path")
        if self.path:
            parse_steps(self.path)


class NoStepReachesTarget(MincapError):
    """No step of the compression path reached the target; `record` still holds every step."""

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


def _history(history) -> list[dict]:
    return [{"epoch": h.epoch, "train_loss": h.train_loss, "val_acc": h.val_acc, "time_s": round(h.time_s, 3)}
            for h in history]


def total_epochs(exp: Experiment) -> int:
    """Epochs the run will report through `on_epoch` (for a progress bar)."""
    comp = exp.compress
    if comp is None:
        return exp.train.epochs
    extra = comp.prune_steps * comp.prune_finetune_epochs * (comp.prune_ratio > 0)
    trained_steps = [st for st in parse_steps(exp.path) if set(st) - {"side"}] if exp.path else []  # side=B: no epochs
    extra += comp.prune_finetune_epochs * ((comp.sparsity > 0) + len(trained_steps))
    return exp.train.epochs + extra


@dataclass
class Loaded:
    """What a run needs before its first epoch: the device, the split, the sized spec, the teacher."""

    device: torch.device
    splits: data.Splits
    spec: models.Spec
    teacher: nn.Module | None


def load_experiment(exp: Experiment, *, verbose: bool = False) -> Loaded:
    """Threads, device, data and teacher: everything that can fail or take long before training."""
    train.setup_threads(exp.threads)
    device = train.pick_device(exp.device)
    splits = data.load(exp.dataset, root=exp.data_dir, n_val=exp.n_val, split_seed=exp.split_seed,
                       limit=exp.limit, device=device)
    spec = models.parse_arch(exp.arch).with_data(splits.in_shape, splits.n_classes)
    teacher = None
    if exp.teacher:
        teacher = get_teacher(exp.teacher, splits, epochs=exp.teacher_epochs, n_val=exp.n_val,
                              split_seed=exp.split_seed, limit=exp.limit, root=exp.data_dir, device=device,
                              verbose=verbose)
    return Loaded(device, splits, spec, teacher)


def run_experiment(exp: Experiment, loaded: Loaded | None = None, *, on_epoch: Callable | None = None,
                   verbose: bool = False) -> dict:
    """Train as `exp` says (`loaded`: from `load_experiment`, loaded here when None); the run's record."""
    ld = loaded or load_experiment(exp, verbose=verbose)
    device, splits, spec, teacher = ld.device, ld.splits, ld.spec, ld.teacher
    out: dict = {"dataset": exp.dataset}
    if splits.memorization:  # validation is the training set: say so wherever the record goes
        out["memorization"] = data.memorization_note(exp.dataset)
    if exp.compress is None:
        model = train.init_model(spec, exp.train.seed, device)
        res = train.train(model, splits, exp.train, on_epoch=on_epoch, teacher=teacher)
        final_spec, val_acc, history, train_time_s = spec, res.val_acc, res.history, res.train_time_s
        size = {"n_params": models.count_params(model)}
    else:
        model, final_spec, size, val_acc, history, train_time_s, data_bytes = _compressed(
            exp, splits, spec, device, teacher, on_epoch, out)
        if exp.output:
            artifact.write(exp.output, data_bytes)
    out.update({
        "spec": final_spec.to_dict(),
        "n_params": size["n_params"],
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "epochs": len(history),
        "val_acc": val_acc,
        "train_time_s": round(train_time_s, 3),
        "device": str(device),
        "config": exp.train.to_dict(),
        "history": _history(history),
    })
    if exp.compress is not None:
        out.update({
            "compress": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(exp.compress).items()},
            "teacher": None if teacher is None else {"arch": exp.teacher, "epochs": exp.teacher_epochs,
                                                     "val_acc": teacher.val_acc},
            "artifact": exp.output,
            **{k: size[k] for k in ("artifact_bits", "n_nonzero", "nominal_bits")},
            "layers": size["layers"],
        })
    if exp.test:
        out["test_acc"], _ = final_test_accuracy(model.to(device), exp.dataset, root=exp.data_dir)
        out["test_note"] = TEST_NOTE
    return out


def _compressed(exp: Experiment, splits, spec, device, teacher, on_epoch, out: dict) -> tuple:
    """The compressed run or the compression path: (model, spec, size, val_acc, history, time, bytes)."""
    comp = exp.compress
    if not exp.path:
        res = train_compressed(spec, splits, exp.train, comp, on_epoch=on_epoch, device=device, teacher=teacher)
        out.update(qat_val_acc=res.qat_val_acc, pruned=[{str(k): v for k, v in p.items()} for p in res.pruned])
        return res.model, res.spec, res.size, res.val_acc, res.history, res.train_time_s, res.artifact
    path = compression_path(spec, splits, exp.train, comp, steps=parse_steps(exp.path), target=exp.target,
                            on_epoch=on_epoch, device=device, teacher=teacher)
    chosen = path.chosen or (path.steps[-1] if exp.target is None else None)
    out["path"] = [{**s.to_dict(), "removed": {str(k): v for k, v in s.removed.items()}} for s in path.steps]
    out["target"] = exp.target
    out["chosen_step"] = None if chosen is None else chosen.index
    if exp.path_dir:
        for s in path.steps:
            artifact.write(f"{exp.path_dir}/step{s.index}.mincap", s.artifact)
    if chosen is None:
        out.update(train_time_s=round(path.train_time_s, 3), history=_history(path.history))
        raise NoStepReachesTarget(f"no step of the path reaches --target {exp.target} on validation "
                                  f"(best {max(s.val_acc for s in path.steps):.4f}); nothing written", out)
    dec = decode(chosen.artifact)
    model: nn.Module = dec.model
    return model, dec.spec, dec.size, chosen.val_acc, path.history, path.train_time_s, chosen.artifact
