import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from mincap import data
from mincap.errors import MincapError
from mincap.evaluation import holdout


def test_real_mnist_shapes_and_counts(mnist_root):
    s = data.load("mnist", root=mnist_root)
    assert s.train.x.shape == (55000, 1, 28, 28) and s.train.x.dtype == torch.uint8
    assert s.val.x.shape == (5000, 1, 28, 28)
    assert s.train.y.dtype == torch.int64 and s.n_classes == 10
    counts = torch.bincount(torch.cat([s.train.y, s.val.y]), minlength=10)
    # The official MNIST training label counts.
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test = holdout.load_test("mnist", root=mnist_root)
    assert test.x.shape == (10000, 1, 28, 28) and len(test) == 10000


def test_split_disjoint_and_deterministic(mnist_root):
    x, _ = data.load_arrays("mnist", str(mnist_root), True)
    tr, va = data.split_indices(len(x), 5000, 0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 60000
    tr2, va2 = data.split_indices(len(x), 5000, 0)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    _, va3 = data.split_indices(len(x), 5000, 1)
    assert not np.array_equal(va, va3)
    a = data.load("mnist", root=mnist_root, limit=100)
    b = data.load("mnist", root=mnist_root, limit=100)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    # Validation images really are training-set images, none of them also in train.
    flat_tr = {bytes(r) for r in a.train.x.reshape(100, -1).numpy()}
    assert not any(bytes(r) in flat_tr for r in a.val.x.reshape(5000, -1).numpy())


def test_limit_keeps_validation(mnist_root):
    s = data.load("mnist", root=mnist_root, limit=2000)
    assert len(s.train) == 2000 and len(s.val) == 5000


def test_training_never_reads_test(mnist_root, monkeypatch):
    """`mincap train`'s whole run (data loading, training, QAT, a compression path, export and
    decoding) reads no test image; the same run with `test=True` does, through the spy below,
    so the spy sees a read wherever it happens."""
    from mincap.config import CompressConfig, TrainConfig
    from mincap.training.experiment import Experiment, load_experiment, run_experiment

    reads = []
    real = data.registry._load_arrays  # every read of a dataset part goes through here, cached or not
    monkeypatch.setattr(data.registry, "_load_arrays",
                        lambda name, roots, train: reads.append((name, train)) or real(name, roots, train))
    exp = Experiment(arch="mlp-32", data_dir=str(mnist_root), limit=300, n_val=300, device="cpu",
                     train=TrainConfig(epochs=1, batch_size=100), compress=CompressConfig(bits=4, qat_epochs=1),
                     path="sparsity=0.5", target=0.0)
    out = run_experiment(exp, load_experiment(exp, verbose=False))
    assert "test_acc" not in out and len(out["path"]) == 2
    assert reads and ("mnist", False) not in reads  # the train part was read, the test part never
    reads.clear()
    out = run_experiment(replace(exp, test=True), load_experiment(exp, verbose=False))
    assert ("mnist", False) in reads and 0.0 <= out["test_acc"] <= 1.0


def test_unknown_dataset():
    with pytest.raises(MincapError, match="unknown dataset"):
        data.load("nope")


def test_corrupted_file_refused(tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist_root / "MNIST" / "raw").glob("*.gz"):
        (raw / f.name).write_bytes(f.read_bytes())
    p = raw / "train-labels-idx1-ubyte.gz"
    b = bytearray(p.read_bytes())
    b[100] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(MincapError, match="md5 mismatch"):
        data.load_arrays("mnist", str(tmp_path), True)


def test_missing_files_offline_one_line_error(tmp_path):
    env = {"MINCAP_DATA": str(tmp_path), "MINCAP_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "mincap.cli", "train", "--epochs", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "train-images-idx3-ubyte.gz" in lines[0] and str(tmp_path / "MNIST" / "raw") in lines[0]
    assert "Traceback" not in r.stderr


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("MINCAP_DATA", str(tmp_path / "env"))
    assert data.data_dir() == tmp_path / "env"
    assert data.data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("MINCAP_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_dir() == tmp_path / "cache" / "mincap"


def test_default_search_path_finds_the_data_beside_the_checkout(monkeypatch, tmp_path, mnist_root):
    """The README's main command runs offline with no data option: shared/datasets beside the clone."""
    if mnist_root.resolve() != data.registry.SHARED_BESIDE_CHECKOUT.resolve():
        pytest.skip("MNIST is not in shared/datasets beside this checkout")
    monkeypatch.delenv("MINCAP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert data.data_dirs() == (tmp_path / "empty-cache" / "mincap", data.registry.SHARED_BESIDE_CHECKOUT)
    x, y = data.load_arrays("mnist", None, True)
    assert x.shape == (60000, 1, 28, 28) and len(y) == 60000
    assert not (tmp_path / "empty-cache").exists()  # found, not downloaded
