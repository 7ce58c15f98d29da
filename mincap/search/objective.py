"""One trial: train, compress, write the artifact, DECODE it and evaluate the decoded network.

One trial: sample an architecture and its compression (per-layer bit widths, pruning,
epochs, learning rate, ...) -> train on the train split, reporting validation accuracy
each epoch -> prune / quantize -> write the `.mincap` artifact and decode it -> evaluate
the decoded network on the validation split. Two objectives: minimize `artifact_bits`,
maximize validation accuracy; a trial is feasible when validation accuracy >= target
(Optuna 5's `Trial.set_constraint`, which its samplers read). The artifact goes to the
study's `optuna.artifacts` store.

Faults: a NaN loss or any exception fails that trial with its reason (`fail_reason`)
and the study goes on (`catch=(Exception,)` in the optimize loop). Ctrl-C or SIGTERM
fails the running trial with the reason "interrupted by the user (SIGINT)" / "(SIGTERM)",
prints one line for it and no traceback, and stops the search.

Multi-fidelity: with `[fidelity] enabled`, a sampled trial is first screened by a short
run and trained in full only when promoted (`mincap.search.fidelity`); stopped ones are
PRUNED with `fidelity` = "screen".

Deadline: with a `--timeout`, a trial still training when the deadline passes is stopped
at its next epoch and recorded PRUNED with `stop_reason` (Optuna's own timeout only
stops *between* trials, so one long trial could overrun the budget by its whole length).
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time

import optuna

from mincap.compression.qat import Compressed, train_compressed
from mincap.config import CompressConfig, TrainConfig
from mincap.config.study import StudyConfig
from mincap.data import Splits
from mincap.failures import failures_recorded
from mincap.format.container import write
from mincap.nets.models import Spec, build, count_params
from mincap.search.early_stop import EarlyStopRule
from mincap.search.fidelity import (
    promote_decision,
    screen_configs,
    screen_key,
    screen_peers,
    screen_splits,
)
from mincap.search.path_trial import train_trial
from mincap.search.space import sample_trial
from mincap.training.engine import EpochStats

__all__ = ["Objective", "TrialRun"]


class TrialRun:
    """One trial's bookkeeping while it trains: its validation curve and the early-stop decision."""

    def __init__(self, trial, rule: EarlyStopRule, epochs: int, *, deadline: float | None = None) -> None:
        self.trial, self.rule, self.epochs, self.deadline = trial, rule, epochs, deadline
        self.curve: list[float] = []
        self.saved_s: float | None = None  # set when the rule stopped the trial
        self.deadline_hit: str | None = None  # set when the search's deadline stopped the trial
        self.t0 = time.perf_counter()

    @property
    def stopped(self) -> bool:
        return self.saved_s is not None or self.deadline_hit is not None

    def on_epoch(self, stats: EpochStats) -> bool:
        """`mincap.training.engine`'s on_epoch callback: True = stop this trial's training now."""
        self.curve.append(stats.val_acc)
        self.trial.set_user_attr("progress", [len(self.curve), self.epochs, stats.val_acc])
        n = len(self.curve)
        if self.deadline is not None and time.time() >= self.deadline:
            phase = f"epoch {n}/{self.epochs}" if n <= self.epochs else f"fine-tuning epoch {n - self.epochs}"
            self.deadline_hit = f"the search's --timeout deadline passed during {phase}"
            return True
        if math.isnan(stats.train_loss) or n > self.epochs:  # fine-tuning epochs are not judged
            return False
        if self.rule.should_stop(n, self.epochs, max(self.curve)):
            self.saved_s = (time.perf_counter() - self.t0) / n * (self.epochs - n)
            return True
        return False


class _Stop(Exception):
    """Raised out of a lone trial's training once the early-stop rule fired: nothing after it is needed."""


class Objective:
    """A trial in three steps -- `begin` (record the spec, set up early stopping), training,
    `finish` (record size and accuracy, store the artifact) -- so that the batched path
    (`mincap.search.batched`) can train many begun trials at once and finish each alone."""

    def __init__(self, cfg: StudyConfig, splits: Splits, device, artifact_store, *,
                 deadline: float | None = None) -> None:
        """`deadline`: a `time.time()` after which running trials stop at their next epoch."""
        self.cfg, self.splits, self.device, self.store = cfg, splits, device, artifact_store
        self.deadline = deadline

    def _feasible_curves(self, study) -> list[list[float]]:
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        target = self.cfg.study.target
        return [t.user_attrs.get("curve", []) for t in done if t.user_attrs.get("val_acc", 0.0) >= target]

    def __call__(self, trial) -> tuple[float, float]:
        with failures_recorded(trial):
            spec, train_cfg, comp = sample_trial(trial, self.cfg, self.splits.in_shape, self.splits.n_classes)
            run = self.begin(trial, spec, train_cfg)
            if self.cfg.fidelity.enabled:
                self.screen(run, spec, train_cfg, comp)

            def on_epoch(stats: EpochStats) -> bool:
                if run.on_epoch(stats):
                    raise _Stop
                return False

            try:
                res = self.train(run, spec, train_cfg, comp, on_epoch=on_epoch)
            except _Stop:
                res = None
            return self.finish(run, res, comp)

    def train(self, run: TrialRun, spec: Spec, train_cfg: TrainConfig, comp: CompressConfig, *, on_epoch,
              pretrained=None) -> Compressed:
        """The trial's full training (`mincap.search.path_trial.train_trial`); a compression path's
        steps -- (bits, validation accuracy) each -- are recorded as the `path` attribute."""
        res, path = train_trial(spec, self.splits, train_cfg, comp, target=self.cfg.study.target, on_epoch=on_epoch,
                                device=self.device, stop_margin=self.cfg.space.path_stop_margin,
                                pretrained=pretrained)
        if path is not None:
            run.trial.set_user_attr("path", path)
        return res

    def begin(self, trial, spec: Spec, train_cfg: TrainConfig) -> TrialRun:
        trial.set_user_attr("spec", spec.to_json())
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who ran it, on many machines
        trial.set_user_attr("n_params_initial", count_params(build(spec)))
        trial.set_user_attr("progress", [0, train_cfg.epochs, None])  # the live table: training has begun
        rule = EarlyStopRule(self.cfg, self._feasible_curves(trial.study))
        return TrialRun(trial, rule, train_cfg.epochs, deadline=self.deadline)

    def screen(self, run: TrialRun, spec: Spec, train_cfg: TrainConfig, comp: CompressConfig) -> None:
        """The screening stage: return to train in full (promoted), or raise TrialPruned (stopped).

        Seed presets are not screened. The full run's clock (`run.t0`) starts after screening;
        the screening time is kept apart as `screen_time_s`.
        """
        trial, fi = run.trial, self.cfg.fidelity
        if "seed_preset" in trial.user_attrs:
            trial.set_user_attr("fidelity", "full")
            return
        t0 = time.perf_counter()
        s_train, s_comp = screen_configs(train_cfg, comp, fi)

        def on_epoch(stats: EpochStats) -> bool:
            if self.deadline is not None and time.time() >= self.deadline:
                raise _Stop
            return False

        try:
            res = train_compressed(spec, screen_splits(self.splits, fi), s_train, s_comp, on_epoch=on_epoch,
                                   device=self.device)
        except _Stop:
            reason = "the search's --timeout deadline passed during screening"
            trial.set_user_attr("fidelity", "screen")
            trial.set_user_attr("stop_reason", reason)
            raise optuna.TrialPruned(reason) from None
        key = screen_key(fi)
        point = (float(res.size["artifact_bits"]), float(res.val_acc))
        trial.set_user_attr("screen", list(point))
        trial.set_user_attr("screen_key", key)
        trial.set_user_attr("screen_time_s", round(time.perf_counter() - t0, 2))
        peers = screen_peers(trial.study.get_trials(deepcopy=False), key, exclude=trial.number)
        promoted, why = promote_decision(point, peers, fi)
        trial.set_user_attr("screen_decision", why)
        if not promoted:
            trial.set_user_attr("fidelity", "screen")
            trial.set_user_attr("stop_reason", f"screening ({key}): {why}"[:200])
            raise optuna.TrialPruned(why)
        trial.set_user_attr("fidelity", "full")
        run.t0 = time.perf_counter()

    def finish(self, run: TrialRun, res: Compressed | None, comp: CompressConfig) -> tuple[float, float]:
        """Record a trained trial (`res`: None when early-stopped); its two objective values."""
        trial, curve = run.trial, run.curve
        trial.set_user_attr("curve", curve[: run.epochs])
        trial_time_s = res.train_time_s if res is not None else time.perf_counter() - run.t0
        trial.set_user_attr("train_time_s", round(trial_time_s, 2))
        if run.deadline_hit is not None:
            trial.set_user_attr("stop_reason", run.deadline_hit)
            raise optuna.TrialPruned(run.deadline_hit)
        if run.saved_s is not None:
            trial.set_user_attr("stop_reason", f"early stop at epoch {len(curve)}")
            # Three decimals: on small data an epoch takes a few hundredths of a second.
            trial.set_user_attr("early_stop_saved_s", round(run.saved_s, 3))
            trial.set_user_attr("early_stop_val_acc", curve[-1])
            raise optuna.TrialPruned(f"early stop at epoch {len(curve)}: val {curve[-1]:.4f}")
        size = res.size
        trial.set_user_attr("final_spec", res.spec.to_json())
        trial.set_user_attr("bits_per_layer", list(comp.bits_per_layer or ()))
        for key in ("n_params", "n_nonzero", "nominal_bits", "artifact_bits"):
            trial.set_user_attr(key, size[key])
        trial.set_user_attr("layers", size.get("layers", []))
        trial.set_user_attr("val_acc", res.val_acc)
        # Optuna's constraint mechanism (v5: Trial.set_constraint): feasible when <= 0.
        trial.set_constraint("val_acc_target", self.cfg.study.target - res.val_acc)
        # optuna-dashboard (0.21) reads only the older list under system attribute "constraints" (what
        # samplers' `constraints_func` writes); Optuna reads both, so the trial counts the same there.
        trial.study._storage.set_trial_system_attr(trial._trial_id, "constraints",
                                                   [self.cfg.study.target - res.val_acc])
        with tempfile.TemporaryDirectory() as tmp:
            path = write(os.path.join(tmp, f"trial-{trial.number}.mincap"), res.artifact)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )
        trial.set_user_attr("artifact_id", artifact_id)
        return float(size["artifact_bits"]), float(res.val_acc)
