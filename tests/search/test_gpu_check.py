"""bench/gpu_check.sh, the prepared GPU check, runs to completion on the CPU (`--cpu --quick`)."""

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_the_cpu(mnist_root):
    env = {**os.environ, "MINCAP_DATA": str(mnist_root), "MINCAP_THREADS": "1"}
    p = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--cpu", "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 5, p.stdout
    assert lines[0].startswith("device: CPU")
    assert re.fullmatch(
        r"sep-1\.8k one at a time: [\d.]+ s per float epoch, [\d.]+ s per lsq QAT epoch "
        r"\(500 train images, batch 256\)",
        lines[1],
    )
    assert (
        lines[2] == "sep-1.8k batched: not supported "
        "(the batched engine does not train depthwise-separable blocks)"
    )
    assert re.fullmatch(
        r"default study: \d+ trials/h \(\d+ finished in \d+ s: .*; "
        r"\d+ stopped at the 5 s deadline\)",
        lines[3],
    )
    assert re.fullmatch(
        r"one-shot supernet: [\d.]+ s per float epoch, [\d.]+ s per QAT epoch \(500 train images\); "
        r"[\d.]+ s per scored sub-network \(4 random, 500 calibration images\)",
        lines[4],
    )


def test_gpu_check_without_a_gpu_says_so_in_one_line():
    p = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and p.stdout == ""
    assert (
        p.stderr.strip() == "gpu_check: error: no CUDA device here; "
        "run with --cpu (a smaller budget) to check the script"
    )
