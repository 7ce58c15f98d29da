"""`mincap train` off a terminal: epoch lines in the log instead of a bar drawn once at the end;
the bar on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

from rich.console import Console

from mincap.report import epoch_progress


def _run_epochs(console: Console, epochs: int, label: str = "training") -> None:
    with epoch_progress(epochs, console=console, label=label) as on_epoch:
        for i in range(epochs):
            on_epoch(SimpleNamespace(train_loss=1.0 / (i + 1), val_acc=0.5 + 0.01 * i))


def test_epoch_lines_off_a_terminal_and_a_bar_on_one():
    log = io.StringIO()
    _run_epochs(Console(file=log, width=100), 12)
    assert log.getvalue().splitlines() == [
        "training: epoch 5/12  loss 0.2000  val 54.00%",
        "training: epoch 10/12  loss 0.1000  val 59.00%",
        "training: epoch 12/12  loss 0.0833  val 61.00%",  # the last
    ]
    term = io.StringIO()
    _run_epochs(Console(file=term, force_terminal=True, width=100), 12)
    shown = term.getvalue()
    assert "\x1b[" in shown and "━" in shown and "12/12" in shown and "val 61.00%" in shown
    assert "training: epoch" not in shown
    off = io.StringIO()
    with epoch_progress(3, enabled=False, console=Console(file=off)) as on_epoch:  # --json
        on_epoch(SimpleNamespace(train_loss=1.0, val_acc=0.5))
    assert off.getvalue() == ""


def test_mincap_train_writes_epoch_lines_to_a_log_file(tmp_path, mnist_root):
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        r = subprocess.run([sys.executable, "-m", "mincap.cli", "train", "--arch", "mlp-32", "--epochs", "6",
                            "--limit", "500", "--data-dir", str(mnist_root), "--threads", "1"],
                           stdout=out, stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    epochs = [line.split("  ")[0] for line in text.splitlines() if line.startswith("training: epoch")]
    assert epochs == ["training: epoch 5/6", "training: epoch 6/6"]
    before_table = text.split("mincap train: mnist")[0]  # the result table draws its own lines
    assert "━" not in before_table and "\x1b[" not in text  # no bar, no terminal codes
