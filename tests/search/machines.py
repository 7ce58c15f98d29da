"""Helpers of the many-machines tests: a tiny study file per simulated machine, the command line."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import optuna

# The tiny study every search test uses (tests/search/test_search.py formats it too).
STUDY = """
[study]
name = "{name}"
target = {target}
seeds = {seeds}
[data]
n_val = 1000
limit = {limit}
[budget]
trials = 2
[storage]
heartbeat_interval_s = 1
grace_period_s = 2
[space]
families = ["mlp"]
mlp_depth = [1, 1]
mlp_width = [8, 32]
bits = [3, 6]
prune_ratio = [0.0, 0.0]
epochs = [{epochs}, {epochs}]
batch_size = [32, 64]
lr = [0.005, 0.03]
augment = [0, 0]
"""


def write_study(folder: Path, name: str = "many", *, limit: int = 400, epochs: int = 1) -> Path:
    """A tiny study file (an MLP on `limit` MNIST images) in `folder`: each simulated machine gets its own copy."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{name}.toml"
    # No seed preset: machines starting together could both enqueue it. No early stopping: these
    # tests are about machines, and a trial stopped early would race with the kills and restarts.
    f.write_text(STUDY.format(name=name, target=0.6, seeds="[]", limit=limit, epochs=epochs)
                 + "[early_stop]\nenabled = false\n")
    return f


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mincap_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mincap.cli", *args]


def run_env(mnist_root) -> dict:
    return {**os.environ, "MINCAP_DATA": str(mnist_root), "MINCAP_THREADS": "1"}


def trials_of(url: str, name: str = "many") -> list:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def wait_for(what, timeout_s: float, step_s: float = 0.3):
    """Poll `what()` until it returns something true; that value, or None at the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = what()
        except Exception:  # noqa: BLE001 - the study may not exist yet
            got = None
        if got:
            return got
        time.sleep(step_s)
    return None
