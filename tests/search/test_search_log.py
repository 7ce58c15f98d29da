"""Issue 27 item 6: a search's progress off a terminal (a log file) as plain lines; the live panel
on a terminal."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from test_search import _trials, make_study

from mincap.config.study import load_study_file
from mincap.report import plain_every
from mincap.search.monitor import PlainProgress, SearchMonitor
from mincap.search.run import SearchOptions
from mincap.search.storage import open_study

SPEC = '{"family": "mlp", "hidden": [32]}'
CLOCK = re.compile(r"^\d\d:\d\d:\d\d ")
T0, T1 = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 9, 7)


def _trial(number, state, values=None, start=T0, end=None, **attrs) -> FrozenTrial:
    return FrozenTrial(number, state, None, start, end, {}, {}, attrs, {}, {}, number, values=values)


def _plain(lines):
    """The lines without their clock (each must have one)."""
    assert all(CLOCK.match(line) for line in lines), lines
    return [CLOCK.sub("", line) for line in lines]


def test_a_trial_starts_reports_every_fifth_epoch_and_its_last_and_ends():
    log = PlainProgress(0.9, every=5)
    running = dict(spec=SPEC, seed_preset="mlp-32")
    assert log.update([_trial(0, TrialState.RUNNING)]) == []  # drawing its parameters: not begun yet
    assert _plain(log.update([_trial(0, TrialState.RUNNING, progress=[0, 12, None], **running)])) == [
        "trial 0 started  fc 32  (seed preset mlp-32)"]
    assert log.update([_trial(0, TrialState.RUNNING, progress=[4, 12, 0.5], **running)]) == []
    # a poll that missed epoch 5 reports the epoch it sees
    assert _plain(log.update([_trial(0, TrialState.RUNNING, progress=[6, 12, 0.75], **running)])) == [
        "trial 0 epoch 6/12  val 75.00%"]
    assert log.update([_trial(0, TrialState.RUNNING, progress=[9, 12, 0.8], **running)]) == []
    curve = [0.1 * i for i in range(1, 10)] + [0.905, 0.91, 0.92]
    done = _trial(0, TrialState.COMPLETE, [5000.0, 0.93], end=T1, curve=curve, progress=[12, 12, 0.92],
                  artifact_bits=5000, val_acc=0.93, final_spec=SPEC, bits_per_layer=[4, 3], **running)
    lines = log.update([done])
    assert lines[-1].startswith("03:09:07 ")  # the trial's own end
    assert _plain(lines) == [
        "trial 0 epoch 10/12  val 90.50%",  # from the curve: the poll came after the trial ended
        "trial 0 epoch 12/12  val 92.00%",
        "trial 0 COMPLETE  5,000 bits  val 93.00%  fc 32; bits 4/3  (reaches the target 90%; best so far 5,000 bits)",
    ]
    assert log.update([done]) == []  # said once


def test_pruned_failed_stale_and_no_network_trials_and_the_best_so_far():
    before = _trial(0, TrialState.COMPLETE, [4000.0, 0.95], artifact_bits=4000, val_acc=0.95, spec=SPEC)
    log = PlainProgress(0.9, skip={0}, every=5)
    early = _trial(1, TrialState.PRUNED, spec=SPEC, curve=[0.2, 0.3, 0.35], progress=[3, 20, 0.35],
                   stop_reason="early stop at epoch 3", early_stop_val_acc=0.35)
    failed = _trial(2, TrialState.FAIL, spec=SPEC, fail_reason="NonFiniteLoss: loss became nan in epoch 1")
    screened = _trial(3, TrialState.PRUNED, spec=SPEC, fidelity="screen", screen=[1234.0, 0.4],
                      stop_reason="screening (e2): rank 3 of 4")
    small = _trial(4, TrialState.COMPLETE, [3000.0, 0.85], artifact_bits=3000, val_acc=0.85, spec=SPEC, curve=[0.85])
    stale = _trial(5, TrialState.RUNNING, spec=SPEC, progress=[2, 5, 0.3])
    nets = [_trial(n, TrialState.PRUNED, stop_reason="not a network: the blocks leave no pixels") for n in (6, 7, 8)]
    lines = _plain(log.update([before, early, failed, screened, small, stale, *nets], stale_ids={5}))
    assert lines == [
        "trial 1 started  fc 32",
        "trial 1 epoch 3/20  val 35.00%",  # its last epoch, stopped early
        "trial 1 PRUNED  val 35.00%  fc 32  (early stop at epoch 3)",
        "trial 2 started  fc 32",
        "trial 2 FAIL  fc 32  (NonFiniteLoss: loss became nan in epoch 1)",
        "trial 3 started  fc 32",
        "trial 3 PRUNED  screening run: 1,234 bits  val 40.00%  fc 32  (screening (e2): rank 3 of 4)",
        "trial 4 started  fc 32",
        "trial 4 epoch 1/1  val 85.00%",
        # smaller than trial 0, but below the target: the best stays trial 0's
        "trial 4 COMPLETE  3,000 bits  val 85.00%  fc 32  (below the target 90%)",
        "trial 5 stale: no heartbeat for longer than the grace period (worker gone?)",
        "3 draw(s) were not a network for this input, pruned untrained (trial(s) 6, 7, 8)",
    ]
    assert "best so far" not in " ".join(lines) and log.best == 4000  # trial 0's, from before this run
    smaller = _trial(9, TrialState.COMPLETE, [3500.0, 0.91], artifact_bits=3500, val_acc=0.91, spec=SPEC)
    assert _plain(log.update([smaller]))[-1].endswith("(reaches the target 90%; best so far 3,500 bits)")


def test_epoch_lines_are_every_fifth_or_a_twentieth_of_a_long_run():
    assert [plain_every(n) for n in (1, 50, 100, 101, 400, 2000)] == [5, 5, 5, 6, 20, 100]
    log = PlainProgress(0.9)  # every: plain_every(epochs)
    curve = [0.5] * 50
    lines = log.update([_trial(0, TrialState.COMPLETE, [1.0, 0.5], spec=SPEC, curve=curve, progress=[50, 50, 0.5],
                               artifact_bits=1, val_acc=0.5)])
    assert [int(re.search(r"epoch (\d+)/", line).group(1)) for line in lines if "epoch" in line] == \
        [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    # fine-tuning epochs after the training run: named as such, not epoch 17/14
    tune = PlainProgress(0.9, every=1)
    tune.update([_trial(1, TrialState.RUNNING, spec=SPEC, progress=[14, 14, 0.9])])
    assert _plain(tune.update([_trial(1, TrialState.RUNNING, spec=SPEC, progress=[17, 14, 0.95])])) == [
        "trial 1 fine-tuning epoch 3  val 95.00%"]


def _env(mnist_root) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**env, "MINCAP_DATA": str(mnist_root), "MINCAP_THREADS": "1"}


def test_a_background_search_writes_its_progress_to_the_log(tmp_path, mnist_root):
    """`mincap search > search.log 2>&1`: one line per trial start, every fifth epoch and the last, and end."""
    f = make_study(tmp_path, name="bg", epochs=6)
    log = tmp_path / "search.log"
    with open(log, "w") as out:
        r = subprocess.run([sys.executable, "-m", "mincap.cli", "search", str(f), "--trials", "2"],
                           stdout=out, stderr=subprocess.STDOUT, env=_env(mnist_root), timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "━" not in text and "┃" not in text and "\x1b[" not in text  # no panel, no terminal codes
    lines = text.splitlines()
    assert lines[0].endswith("mincap search: study bg, target 60%, 0 trial(s) finished before this run; "
                             "this run: 2 trial(s)")
    trials = _trials(f)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        mine = [CLOCK.sub("", line) for line in lines if line[9:].startswith(f"trial {t.number} ")]
        a = t.user_attrs
        assert mine[0].startswith(f"trial {t.number} started  fc ")
        assert mine[1] == f"trial {t.number} epoch 5/6  val {100 * a['curve'][4]:.2f}%"
        assert mine[2] == f"trial {t.number} epoch 6/6  val {100 * a['curve'][5]:.2f}%"
        assert mine[3].startswith(f"trial {t.number} COMPLETE  {a['artifact_bits']:,} bits  val "
                                  f"{100 * a['val_acc']:.2f}%  fc ")
        assert len(mine) == 4
    assert lines[-1].startswith("mincap search: 2 trial(s) run in ")


def _running_study(tmp_path):
    cfg = load_study_file(make_study(tmp_path, name="mon"))
    study = open_study(cfg)
    done = study.ask({"m0": optuna.distributions.IntDistribution(8, 32)})
    done.set_user_attr("spec", SPEC)
    study.tell(done, state=TrialState.FAIL)
    trial = study.ask({"m0": optuna.distributions.IntDistribution(8, 32)})
    trial.set_user_attr("spec", SPEC)
    trial.set_user_attr("progress", [3, 5, 0.5])
    return cfg, study, trial


def test_live_panel_on_a_terminal_and_lines_elsewhere(tmp_path):
    cfg, study, trial = _running_study(tmp_path)
    term = io.StringIO()
    mon = SearchMonitor(cfg, SearchOptions(), total=2, n_before=1, timeout_s=None,
                        console=Console(file=term, force_terminal=True, width=120))
    with mon:
        time.sleep(2.6)  # one refresh of the panel
    shown = term.getvalue()
    assert "\x1b[" in shown and "mincap search: mon" in shown and "epoch 3/5  val 50.00%" in shown
    assert mon.plain is None and "started" not in shown

    logged = io.StringIO()
    mon = SearchMonitor(cfg, SearchOptions(), total=2, n_before=1, timeout_s=None,
                        console=Console(file=logged, width=120))
    with mon:
        study.tell(trial, state=TrialState.FAIL)  # ends before the first poll: the exit writes it
    lines = _plain(logged.getvalue().splitlines())
    assert "\x1b[" not in logged.getvalue() and mon.plain is not None
    assert lines == ["mincap search: study mon, target 60%, 1 trial(s) finished before this run; this run: 2 trial(s)",
                     "trial 1 started  fc 32", "trial 1 FAIL  fc 32"]
    with SearchMonitor(cfg, SearchOptions(), total=2, n_before=1, timeout_s=None, enabled=False,
                       console=Console(file=(off := io.StringIO()))):
        pass
    assert off.getvalue() == ""  # --no-progress
