"""A one-shot trial: one sub-network of the trained supernet, written, decoded, scored in seconds.

`OneshotObjective` is an Optuna objective like `mincap.search.objective.Objective`, with the
same objectives (artifact bits, validation accuracy of the decoded file), the same feasibility
constraint (validation >= target, `Trial.set_constraint` and the "constraints" system
attribute) and the same user attributes, so `mincap summary`, the monitor and the reports read
its trials as any other. A trial samples the depth (`conv_depth`), each block's width (`c{i}`),
each layer's bits (`bits{i}`) and the magnitude sparsity (`sparsity`) within the supernet's
space, inherits the weights, re-estimates batch norm on train images and scores the decoded
file (`mincap.oneshot.score`). Nothing reads the test set.

The second fidelity: once the study holds `promote_after` completed trials, a trial within
`promote_margin` of the target (or above it) whose file is smaller than the smallest feasible
file of the study so far, and (`promote_front`) on the front of inherited scores -- no earlier trial's inherited file is as small and as accurate -- is
fine-tuned for `finetune_epochs` from its inherited weights with its learned steps, distilled
from the supernet's largest sub-network (float, batch norm re-estimated), by the project's
engine; then re-calibrated, exported, decoded and scored again. Both scores are recorded
(`oneshot`, `finetune`); the trial's result is the one the project's selection rule prefers (the
smaller feasible file, else the more accurate), its `fidelity` attribute says which, and its
artifact is that file. With a `deadline` (the search's `--timeout`) a fine-tuning stops after
the epoch in which it passes, and is scored as it stands (`finetune.epochs` says how many ran);
after the deadline no trial is promoted.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from dataclasses import replace

import optuna
import torch.nn as nn

from mincap.config import TrainConfig
from mincap.data import Splits
from mincap.evaluation.selection import most_accurate, smallest_reaching
from mincap.failures import failures_recorded
from mincap.format.container import write
from mincap.nets.models import build, count_params
from mincap.oneshot.extract import calibrated_model, recalibrate_bn
from mincap.oneshot.score import Scored, score_model, score_subnet
from mincap.oneshot.settings import OneshotSettings
from mincap.oneshot.space import SubnetConfig, SupernetSpace
from mincap.oneshot.supernet import Supernet
from mincap.oneshot.trainer import SupernetRun
from mincap.training.engine import train

__all__ = ["OneshotObjective", "OneshotSettings", "better", "sample_subnet"]


def sample_subnet(trial, space: SupernetSpace, settings: OneshotSettings) -> SubnetConfig:
    """Depth, widths, bits per layer and sparsity of one trial, named as the per-trial space names
    them (`conv_depth`, `c{i}`, `bits{i}`): the two kinds of trial compare parameter by
    parameter."""

    def int_(name: str, lo: int, hi: int, step: int = 1) -> int:
        return lo if lo == hi else trial.suggest_int(name, lo, hi, step=step)

    depth = int_("conv_depth", *space.depth)
    widths = []
    for i in range(depth):
        ch = space.width_choices(i)
        widths.append(int_(f"c{i}", ch[0], ch[-1], space.width_step))
    bits = tuple(int_(f"bits{i}", *space.bits) for i in range(space.n_layers(depth)))
    sp = settings.sparsities
    sparsity = float(sp[0] if len(sp) == 1 else trial.suggest_categorical("sparsity", list(sp)))
    return SubnetConfig(tuple(widths), bits, sparsity)


def better(a: Scored, b: Scored, target: float) -> Scored:
    """The project's rule between two files (`mincap.evaluation.selection`): the smaller feasible
    one, else the more accurate."""
    pair = (a, b)
    chosen = smallest_reaching(pair, target, bits=lambda s: s.artifact_bits, val_acc=lambda s: s.val_acc,
                               order=pair.index)
    return chosen or most_accurate(pair, bits=lambda s: s.artifact_bits, val_acc=lambda s: s.val_acc)


def _point(s: Scored) -> dict:
    return {"artifact_bits": s.artifact_bits, "val_acc": s.val_acc, "time_s": round(s.time_s, 3)}


class OneshotObjective:
    """`objective(trial) -> (artifact bits, validation accuracy)` over one supernet's
    sub-networks."""

    def __init__(self, supernet: Supernet | SupernetRun, splits: Splits, artifact_store,
                 settings: OneshotSettings | None = None, *, device=None,
                 deadline: float | None = None) -> None:
        run = supernet if isinstance(supernet, SupernetRun) else None
        self.net = run.net if run is not None else supernet
        self.key = run.key if run is not None else None
        self.net.eval()
        self.splits, self.store = splits, artifact_store
        self.settings = settings or OneshotSettings()
        self.device = device or next(self.net.parameters()).device
        self._teacher: nn.Module | None = None
        self.deadline = deadline  # time.time() of the search's --timeout

    def __call__(self, trial) -> tuple[float, float]:
        with failures_recorded(trial):
            return self._run(trial)

    def _run(self, trial) -> tuple[float, float]:
        st, t0 = self.settings, time.perf_counter()
        cfg = sample_subnet(trial, self.net.space, st)
        spec = self.net.space.spec(cfg)
        trial.set_user_attr("spec", spec.to_json())
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("n_params_initial", count_params(build(spec)))
        trial.set_user_attr("oneshot_config", cfg.to_dict())
        if self.key is not None:
            trial.set_user_attr("supernet", self.key)
        scored, model = score_subnet(self.net, cfg, self.splits, side_bits=st.side_bits,
                                     calib_images=st.calib_images, seed=st.calib_seed,
                                     device=self.device)
        trial.set_user_attr("oneshot", _point(scored))
        final, fidelity = scored, "oneshot"
        if self.promotable(trial, scored):
            tuned, epochs = self.finetune(model, cfg)
            trial.set_user_attr("finetune", {**_point(tuned), "epochs": epochs})
            self._upload(trial, scored, "oneshot_artifact_id")
            final = better(scored, tuned, st.target)
            fidelity = "finetune" if final is tuned else "oneshot"
        trial.set_user_attr("fidelity", fidelity)
        return self.finish(trial, final, cfg, time.perf_counter() - t0)

    def best_feasible_bits(self, done) -> float:
        """The smallest file of the completed trials `done` that reaches the target (inf: none
        yet)."""
        best = smallest_reaching(done, self.settings.target, bits=lambda t: t.user_attrs.get("artifact_bits"),
                                 val_acc=lambda t: t.user_attrs.get("val_acc"), order=lambda t: t.number)
        return math.inf if best is None else float(best.user_attrs["artifact_bits"])

    def promotable(self, trial, scored: Scored) -> bool:
        st = self.settings
        if not (st.promote and st.finetune_epochs > 0) or scored.val_acc < st.target - st.promote_margin:
            return False
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        # One read of the study's completed trials for both tests below.
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(done) < st.promote_after or scored.artifact_bits >= self.best_feasible_bits(done):
            return False
        return not (st.promote_front and self.dominated(done, trial, scored))

    @staticmethod
    def dominated(done, trial, scored: Scored) -> bool:
        """Whether another of the completed trials `done` has an inherited file as small and as
        accurate as this one (a repeated draw included)."""
        for t in done:
            p = t.user_attrs.get("oneshot")
            if t.number != trial.number and p and p["artifact_bits"] <= scored.artifact_bits \
                    and p["val_acc"] >= scored.val_acc:
                return True
        return False

    def teacher(self) -> nn.Module:
        """The supernet's largest sub-network, float, batch norm re-estimated (built once)."""
        if self._teacher is None:
            st = self.settings
            self._teacher = calibrated_model(self.net, self.net.space.largest(), self.splits,
                                             n_images=st.calib_images, seed=st.calib_seed,
                                             device=self.device)
        return self._teacher

    def finetune(self, model: nn.Module, cfg: SubnetConfig) -> tuple[Scored, int]:
        """Fine-tune the calibrated sub-network in place (train split, distilled), then score it
        again: (its score, the epochs that ran -- fewer when the deadline stopped it)."""
        st, t0 = self.settings, time.perf_counter()
        tc = replace(TrainConfig(), epochs=st.finetune_epochs, batch_size=st.finetune_batch_size,
                     lr=st.finetune_lr, seed=st.seed, distill_weight=st.finetune_distill_weight,
                     distill_temperature=st.finetune_temperature)
        deadline = self.deadline

        def past_deadline(_stats) -> bool:
            return deadline is not None and time.time() >= deadline

        res = train(model, self.splits, tc, teacher=self.teacher(), on_epoch=past_deadline)
        recalibrate_bn(model, self.splits.train, n_images=st.calib_images, seed=st.calib_seed)
        model.eval()
        spec = self.net.space.spec(cfg)
        return score_model(model, spec, self.splits, side_bits=st.side_bits, t0=t0), len(res.history)

    def _upload(self, trial, scored: Scored, attr: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            path = write(os.path.join(tmp, f"trial-{trial.number}.mincap"), scored.artifact)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial)
        trial.set_user_attr(attr, artifact_id)
        return artifact_id

    def finish(self, trial, res: Scored, cfg: SubnetConfig,
               trial_time_s: float) -> tuple[float, float]:
        """Record the trial's file as `mincap.search.objective.Objective.finish` records a
        trained one."""
        target = self.settings.target
        size = res.size
        trial.set_user_attr("final_spec", res.spec.to_json())
        trial.set_user_attr("bits_per_layer", list(cfg.bits or ()))
        trial.set_user_attr("sparsity", cfg.sparsity)
        for key in ("n_params", "n_nonzero", "nominal_bits", "artifact_bits"):
            trial.set_user_attr(key, size[key])
        trial.set_user_attr("layers", size.get("layers", []))
        trial.set_user_attr("val_acc", res.val_acc)
        trial.set_user_attr("train_time_s", round(trial_time_s, 2))  # scoring (+ fine-tuning)
        trial.set_constraint("val_acc_target", target - res.val_acc)
        # optuna-dashboard reads only the older system attribute (see mincap.search.objective).
        trial.study._storage.set_trial_system_attr(trial._trial_id, "constraints",
                                                   [target - res.val_acc])
        self._upload(trial, res, "artifact_id")
        return float(size["artifact_bits"]), float(res.val_acc)
