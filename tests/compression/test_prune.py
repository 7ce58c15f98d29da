"""Structured pruning through torch-pruning really removes channels and shrinks the artifact."""

from __future__ import annotations

import pytest
import torch

from mincap.compression.prune import prune_structured
from mincap.format.writer import export
from mincap.nets.models import PRESETS, Conv, Spec, build, count_params, pruned_spec


@pytest.mark.parametrize("criterion", ["l1", "l2", "random", "bn", "fpgm", "lamp"])
def test_pruning_removes_channels_and_shrinks_artifact(criterion):
    from mincap.nets.quant import QuantSpec, attach_fake_quant, detach_fake_quant

    torch.manual_seed(0)
    model = build(PRESETS["tiny"])
    attach_fake_quant(model, [QuantSpec(4)] * 4, enabled=True)
    before_bits = 8 * len(export(model, model.spec))
    n0 = count_params(model)
    specs = detach_fake_quant(model)
    prune_structured(model, 0.5, criterion)
    attach_fake_quant(model, specs, enabled=True)
    assert count_params(model) < 0.5 * n0
    spec = pruned_spec(model, model.spec)
    assert [c.channels for c in spec.convs] == [3, 6, 8]
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    after_bits = 8 * len(export(model, model.spec))
    assert after_bits < 0.7 * before_bits


def test_pruning_flatten_head_with_hidden_layer():
    torch.manual_seed(0)
    spec = Spec(convs=(Conv(6, 5, pool=2), Conv(8, 5, pool=2)), hidden=(20,), batch_norm=True)
    model = build(spec)
    prune_structured(model, 0.25, "l2")
    new = pruned_spec(model, spec)
    assert new.hidden[0] < 20 and new.convs[1].channels < 8
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert count_params(build(new)) == count_params(model)


def _widths(model):
    from mincap.nets.quant import quant_layers

    return [m.weight.shape[0] for m in quant_layers(model)]


def test_prune_counts_floor_never_removes_what_rounds_to_zero():
    from mincap.compression.prune import prune_counts

    assert prune_counts([2, 8, 16], 0.0) == [0, 0, 0]
    # torch-pruning's n - int(n * (1 - r)) removed 1 channel from each of these
    assert prune_counts([2, 8, 16], 0.0016) == [0, 0, 0]
    assert prune_counts([2, 8, 16], 0.25) == [0, 2, 4]
    assert prune_counts([3, 8], 0.99, min_channels=2) == [1, 6]


@pytest.mark.parametrize("global_rank", [False, True])
def test_small_ratio_removes_nothing_and_classes_are_never_pruned(global_rank):
    torch.manual_seed(0)
    model = build(PRESETS["tiny"])  # convs 6, 12, 16, head 10
    assert prune_structured(model, 0.0, "l1", global_rank=global_rank) == {}
    assert prune_structured(model, 0.0016, "l1", global_rank=global_rank) == {}
    assert _widths(model) == [6, 12, 16, 10]
    removed = prune_structured(model, 0.5, "l1", global_rank=global_rank)
    assert _widths(model)[-1] == 10
    assert sum(removed.values()) == (17 if global_rank else 3 + 6 + 8)  # floor(34 * 0.5) in all / per layer
    assert [6, 12, 16] == [w + removed.get(i, 0) for i, w in enumerate(_widths(model)[:3])]
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_global_ranking_keeps_the_per_layer_floor():
    torch.manual_seed(0)
    model = build(PRESETS["tiny"])
    conv0, bn0, conv1 = model.features[0], model.features[1], model.features[4]
    with torch.no_grad():  # 5 of layer 0's 6 channels far less important than any other channel
        conv0.weight[:5].mul_(1e-3)
        bn0.weight[:5].mul_(1e-3)
        conv1.weight[:, :5].mul_(1e-3)
    removed = prune_structured(model, 0.2, "l1", global_rank=True, min_channels=2)
    assert removed[0] == 4 and _widths(model)[0] == 2  # the floor keeps 2 of the 5
    assert sum(removed.values()) == 6  # floor(34 * 0.2), the other 2 elsewhere
