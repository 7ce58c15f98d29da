"""The layers T_1..T_L of a mincap network and their activations on a sample of inputs.

A *layer* is what one block hands to the next: a conv block's output (after its activation,
or after its max pool when it has one; a depthwise-separable block is one layer), each hidden fully connected layer after its
activation, and the output logits. Flatten, global average pooling and dropout (an identity
at evaluation) are not layers of their own. `layer_activations` runs the network once in
evaluation mode and returns each layer flattened to (N, units) as float32 numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from mincap.nets.models import prepare

__all__ = ["BOUNDED", "Layer", "layer_activations", "sample_indices"]

# Activations whose outputs lie in a fixed range: binning uses that range (as Shwartz-Ziv &
# Tishby did for tanh) rather than the observed one.
BOUNDED: dict[type, tuple[float, float]] = {nn.Tanh: (-1.0, 1.0), nn.Hardtanh: (-1.0, 1.0), nn.ReLU6: (0.0, 6.0)}
_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardtanh)


@dataclass
class Layer:
    """One layer's activations on the sample: `values` (N, units) and its binning range (None: observed)."""

    name: str
    values: np.ndarray
    bounds: tuple[float, float] | None


def sample_indices(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """`n` distinct indices out of `n_total`, seeded and sorted (all of them when n >= n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def _blocks(model: nn.Module) -> list[tuple[str, list[nn.Module], tuple[float, float] | None]]:
    """(name, modules, bounds) per layer, in order; modules applied in sequence give the layer."""
    out: list[tuple[str, list[nn.Module], tuple[float, float] | None]] = []
    pending: list[nn.Module] = []
    bounds = None
    n_conv = n_fc = 0
    after_act = False
    for m in model.features:
        # A block ends after its activation and the max pool that may follow it; a separable
        # block's depthwise and pointwise convs both come before its activation, so stay in it.
        if after_act and not isinstance(m, nn.MaxPool2d):
            n_conv += 1
            out.append((f"conv{n_conv}", pending, bounds))
            pending, bounds, after_act = [], None, False
        pending.append(m)
        if isinstance(m, _ACTS):
            bounds, after_act = BOUNDED.get(type(m)), True
    if pending:
        n_conv += 1
        out.append((f"conv{n_conv}", pending, bounds))
        pending, bounds = [], None
    for m in model.classifier:
        pending.append(m)
        if isinstance(m, _ACTS):
            n_fc += 1
            out.append((f"fc{n_fc}", pending, BOUNDED.get(type(m))))
            pending = []
    out.append(("logits", pending, None))
    return out


@torch.no_grad()
def layer_activations(model: nn.Module, x_uint8: torch.Tensor, *, batch_size: int = 1000) -> list[Layer]:
    """Every layer's activations for the uint8 inputs `x_uint8` (N, C, H, W), in network order."""
    was_training = model.training
    model.eval()
    blocks = _blocks(model)
    chunks: list[list[np.ndarray]] = [[] for _ in blocks]
    for i in range(0, len(x_uint8), batch_size):
        h = prepare(x_uint8[i : i + batch_size])
        for k, (_, mods, _) in enumerate(blocks):
            for m in mods:
                h = m(h)
            chunks[k].append(h.reshape(len(h), -1).float().cpu().numpy())
    model.train(was_training)
    return [Layer(name, np.concatenate(c), b) for (name, _, b), c in zip(blocks, chunks)]
