"""`kill -9` mid-training loses at most the epoch in progress; the next start resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from oneshot_data import TINY, synthetic_splits

from mincap.oneshot.trainer import SupernetRecipe, train_supernet

HERE = Path(__file__).resolve().parent
RECIPE = SupernetRecipe(epochs=4, batch_size=32, qat_fraction=0.5)
SLEEP_S = 0.05  # per step in the child: ~1 s an epoch (18 steps), so the kill lands mid-epoch

CHILD = """
import sys, time, torch
sys.path.insert(0, {here!r})
torch.set_num_threads(1)
from oneshot_data import TINY, synthetic_splits
from mincap.oneshot import trainer
step = trainer._step
def slow(*a, **k):
    time.sleep({sleep})
    return step(*a, **k)
trainer._step = slow
trainer.train_supernet(TINY, synthetic_splits(), trainer.{recipe!r}, root={root!r})
"""


def test_kill_9_mid_epoch_loses_at_most_that_epoch_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    code = CHILD.format(here=str(HERE), sleep=SLEEP_S, recipe=RECIPE, root=str(tmp_path))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "user"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                             env=env)
    lines = []
    try:
        for line in child.stderr:
            lines.append(line)
            if line.startswith("mincap: supernet epoch 2/4"):  # printed after epoch 2 is saved
                break
        time.sleep(0.3)  # well inside epoch 3
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, "".join(lines)
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 1, files
    saved = torch.load(files[0], weights_only=True)
    assert saved["epoch"] == 2, "the file is not the last finished epoch"

    torch.set_num_threads(1)  # as the child ran: the same arithmetic
    resumed = train_supernet(TINY, synthetic_splits(), RECIPE, root=tmp_path, progress=False)
    assert resumed.resumed_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert torch.load(files[0], weights_only=True)["epoch"] == 4
    # Resuming draws the batches and sub-networks an uninterrupted run draws: the same weights.
    straight = train_supernet(TINY, synthetic_splits(), RECIPE, use_cache=False, progress=False)
    for k, v in straight.net.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, resumed.net.state_dict()[k]), k


def test_a_deadline_mid_epoch_keeps_the_last_whole_epoch_and_the_next_run_resumes(tmp_path, monkeypatch):
    from mincap.oneshot import trainer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    splits = synthetic_splits()
    steps = len(splits.train) // RECIPE.batch_size
    calls = iter(range(10**6))
    # the clock passes the deadline at the 3rd step of epoch 2 (it is read once a step)
    monkeypatch.setattr(trainer, "_now", lambda: 1.0 if next(calls) >= steps + 2 else 0.0)
    torch.set_num_threads(1)
    cut = train_supernet(TINY, splits, RECIPE, root=tmp_path, progress=False, deadline=1.0)
    assert cut.stopped and cut.epochs_done == 1
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 1 and torch.load(files[0], weights_only=True)["epoch"] == 1
    monkeypatch.setattr(trainer, "_now", time.time)
    resumed = train_supernet(TINY, splits, RECIPE, root=tmp_path, progress=False, deadline=time.time() + 3600)
    assert not resumed.stopped and resumed.resumed_epoch == 1 and resumed.epochs_done == RECIPE.epochs
    straight = train_supernet(TINY, synthetic_splits(), RECIPE, use_cache=False, progress=False)
    for k, v in straight.net.state_dict().items():  # the dropped half epoch left no trace
        if torch.is_tensor(v):
            assert torch.equal(v, resumed.net.state_dict()[k]), k
