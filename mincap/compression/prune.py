"""Structured pruning with torch-pruning's dependency graph: channel counts, importance, the pruned spec."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from mincap.data import Splits
from mincap.errors import MincapError
from mincap.nets.models import is_depthwise, prepare
from mincap.nets.quant import quant_layers

__all__ = ["prune_counts", "prune_structured"]


def _importance(name: str):
    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "random": lambda: tp.importance.RandomImportance(),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "fpgm": lambda: tp.importance.FPGMImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(),
    }[name]()


def prune_counts(widths: list[int], ratio: float, min_channels: int = 1) -> list[int]:
    """Channels to remove per layer: floor(n * ratio), never below `min_channels` left.

    floor, not torch-pruning's `n - int(n * (1 - ratio))` (which is >= 1 for any
    ratio > 0): an amount that rounds to zero channels removes none.
    """
    return [max(0, min(math.floor(n * ratio + 1e-9), n - min_channels)) for n in widths]




def prune_structured(model: nn.Module, ratio: float, criterion: str = "l1", *, splits: Splits | None = None,
                     seed: int = 0, global_rank: bool = False, min_channels: int = 1) -> dict[int, int]:
    """Remove channels/neurons in place through torch-pruning's dependency graph.

    Per layer (default): floor(n * ratio) of each hidden layer's n outputs, lowest
    importance first. `global_rank`: floor(ratio * all hidden outputs) in all, the
    lowest-ranked across layers (torch-pruning's importances are mean-normalized per
    group, so they compare across layers), each layer keeping `min_channels`. The
    last layer's outputs (the classes) are never pruned. Returns {quant-layer index:
    channels removed} for the layers that lost any. The model must carry no
    parametrizations (`mincap.nets.quant.detach_quantizers` first); `taylor` needs `splits`.
    """
    if ratio <= 0:
        return {}
    device = next(model.parameters()).device
    example = torch.zeros((2, *model.spec.in_shape), device=device)
    layers = quant_layers(model)
    # A depthwise conv's channels are its input's: pruning the layer before it prunes it too.
    hidden = [(i, m) for i, m in enumerate(layers[:-1]) if not is_depthwise(m)]
    widths = [m.weight.shape[0] for _, m in hidden]
    torch.manual_seed(seed)
    if criterion == "taylor":
        if splits is None:
            raise MincapError("taylor pruning needs training data")
        x = prepare(splits.train.x[:512].to(device))
        model.zero_grad()
        F.cross_entropy(model(x), splits.train.y[:512].to(device)).backward()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    imp = _importance(criterion)

    def fn(m):
        return tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels

    scores = []
    for (_, m), n in zip(hidden, widths):
        group = graph.get_pruning_group(m, fn(m), idxs=list(range(n)))
        s = imp(group)
        scores.append(torch.zeros(n) if s is None else s.detach().float().cpu().reshape(-1))
    if global_rank:
        total = math.floor(sum(widths) * ratio + 1e-9)
        flat = sorted((float(v), j, c) for j, s in enumerate(scores) for c, v in enumerate(s.tolist()))
        chosen: list[list[int]] = [[] for _ in hidden]
        for _, j, c in flat:
            if total <= 0:
                break
            if widths[j] - len(chosen[j]) > min_channels:
                chosen[j].append(c)
                total -= 1
    else:
        counts = prune_counts(widths, ratio, min_channels)
        chosen = [s.argsort()[:k].tolist() for s, k in zip(scores, counts)]
    removed = {}
    was_training = model.training
    model.eval()
    for (i, m), idxs in zip(hidden, chosen):
        if idxs:
            group = graph.get_pruning_group(m, fn(m), idxs=sorted(idxs))
            group.prune()
            removed[i] = len(idxs)
    model.train(was_training)
    model.zero_grad(set_to_none=True)
    return removed


