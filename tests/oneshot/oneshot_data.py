"""Tiny synthetic data and a tiny supernet space for the one-shot tests (seconds on one core).

A module of its own (not only fixtures) so that the subprocess of the kill test imports it too.
"""

from __future__ import annotations

import torch

from mincap.data import Split, Splits
from mincap.oneshot.space import SupernetSpace


def synthetic_splits(seed: int = 0, n_train: int = 600, n_val: int = 200) -> Splits:
    """12x12 images of 3 classes, each a faint 3x3 blob near its class's place on strong noise:
    learnable, but not to 100%, so small changes to a network change its accuracy."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, 12, 12, generator=g) * 160
    jitter = torch.randint(-1, 2, (n, 2), generator=g)
    for i, (c, (dr, dc)) in enumerate(zip(y.tolist(), jitter.tolist())):
        r, col = ((3, 2), (3, 7), (7, 4))[c]
        x[i, 0, r + dr : r + dr + 3, col + dc : col + dc + 3] += 70
    x = x.clamp(0, 255).to(torch.uint8)
    return Splits("synthetic", Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:]), 3)


TINY = SupernetSpace(widths0=(2, 4), widths=(2, 6), width_step=2, depth=(2, 3), bits=(2, 5),
                     in_shape=(1, 12, 12), n_classes=3)
