import json
import subprocess
import sys
import time

import pytest

from mincap.cli import main


def test_help_is_fast_and_lists_train():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mincap.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
    # Not a timing assertion on speed: a guard that --help does not import torch.
    r = subprocess.run(
        [sys.executable, "-c", "import sys, mincap.cli; mincap.cli.build_parser(); print('torch' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert r.stdout.strip() == "False"
    assert time.perf_counter() - t0 < 60


def test_train_json(mnist_root, capsys):
    rc = main([
        "train", "--arch", "mlp-32", "--data-dir", str(mnist_root), "--limit", "2000",
        "--epochs", "1", "--batch-size", "64", "--json",
    ])
    assert rc == 0
    out = capsys.readouterr().out
    d = json.loads(out)  # stdout is exactly one JSON object
    for key in ("n_params", "val_acc", "train_time_s", "spec", "dataset", "history"):
        assert key in d
    assert "test_acc" not in d  # only with --test (tests/test_train.py)
    assert d["n_params"] == 25450 and d["n_train"] == 2000
    assert d["val_acc"] > 0.7
    assert d["spec"]["family"] == "mlp"


def test_bad_arch_one_line_exit_2(capsys):
    rc = main(["train", "--arch", '{"family":"rnn"}'])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "family" in err


@pytest.mark.parametrize("device,words", [("cuda", "no CUDA device"), ("tpu9", "not a device name")])
def test_missing_device_one_line_exit_2(tmp_path, capsys, device, words):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    f = tmp_path / "d.toml"
    f.write_text('[study]\nname = "d"\n')
    rc = main(["search", str(f), "--device", device, "--trials", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "d.db").exists()  # refused before the study was created
