"""One epoch of the same network, two ways, in one run: mincap's engine vs the pytorch/examples loop.

(a) mincap.training.engine: the train split as one float tensor, `randperm` batches, AdamW + one-cycle;
(b) the classic loop: torchvision's MNIST dataset with ToTensor + Normalize applied per sample,
    a DataLoader with batch 64, Adadelta as in pytorch/examples mnist/main.py.
Prints samples/s for both, the ratio (b's time / a's time), and the FLOP rate (a) achieves
next to this machine's measured rate for a large matmul and a large conv in float32.

    python bench/train_speed.py [--arch tiny] [--data-dir DIR] [--threads N] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def flops_per_sample(model, in_shape) -> float:
    """Forward FLOPs (2 x MACs) of convs and linears for one input; training is ~3x that."""
    import torch

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.weight[0].numel()
            total += 2 * k * out.numel()
        elif isinstance(mod, torch.nn.Linear):
            total += 2 * mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, *in_shape))
    for h in hs:
        h.remove()
    return float(total)


def peak_rates() -> tuple[float, float]:
    """Measured float32 GFLOP/s of a large matmul and a large conv on this machine."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    mm = 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(32, 64, 56, 56)
    with torch.no_grad():
        conv(x)
        t0 = time.perf_counter()
        for _ in range(3):
            conv(x)
    cv = 3 * 2 * 64 * 64 * 9 * 32 * 56 * 56 / (time.perf_counter() - t0) / 1e9
    return mm, cv


def classic_epoch(spec, root: Path, limit: int, seed: int) -> float:
    """pytorch/examples-style epoch on the same number of images; returns seconds."""
    import torch
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    from mincap.training.engine import init_model

    # torchvision wants the raw files extracted in a writable folder: copy them once, untimed.
    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(root / "MNIST" / "raw", tmp / "MNIST" / "raw")
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(str(tmp), train=True, download=True, transform=tf)
    ds = torch.utils.data.Subset(ds, range(limit))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True)
    model = init_model(spec, seed)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    shutil.rmtree(tmp)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=55000, help="training images per epoch")
    args = ap.parse_args()

    import torch

    from mincap import data
    from mincap.nets import models
    from mincap.training import engine as train

    n = train.setup_threads(args.threads)
    root = data.data_dir(args.data_dir)
    spec = models.parse_arch(args.arch)
    splits = data.load("mnist", root=root, limit=args.limit)
    cfg = train.TrainConfig(epochs=1, batch_size=256, augment_shift=0)
    model = train.init_model(spec, 0)
    res = train.train(model, splits, cfg)
    # Subtract the validation pass so both sides time training only.
    t_eval0 = time.perf_counter()
    train.evaluate(model, splits.val)
    t_eval = time.perf_counter() - t_eval0
    t_a = res.train_time_s - t_eval
    t_b = classic_epoch(spec, root, len(splits.train), 0)
    fl = 3 * flops_per_sample(model, spec.in_shape) * len(splits.train)
    mm, cv = peak_rates()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {n} threads, arch {args.arch} "
          f"({models.count_params(model):,} params), {len(splits.train):,} images")
    print(f"(a) mincap engine   : {len(splits.train) / t_a:10,.0f} samples/s  ({t_a:.2f} s/epoch, batch 256)")
    print(f"(b) DataLoader loop : {len(splits.train) / t_b:10,.0f} samples/s  ({t_b:.2f} s/epoch, batch 64)")
    print(f"ratio (b time / a time): {t_b / t_a:.1f}x")
    print(f"(a) achieved: {fl / t_a / 1e9:.2f} GFLOP/s (training ~3x forward FLOPs); "
          f"machine: matmul 2048^2 {mm:.1f} GFLOP/s, conv 64x64x3x3 {cv:.1f} GFLOP/s (float32)")


if __name__ == "__main__":
    main()
