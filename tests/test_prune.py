"""Structured pruning through torch-pruning really removes channels and shrinks the artifact."""

from __future__ import annotations

import pytest
import torch

from mincap.compress import export, prune_structured, pruned_spec
from mincap.models import PRESETS, Conv, Spec, build, count_params


@pytest.mark.parametrize("criterion", ["l1", "l2", "random", "bn", "fpgm", "lamp"])
def test_pruning_removes_channels_and_shrinks_artifact(criterion):
    from mincap.quant import QuantSpec, attach_fake_quant, detach_fake_quant

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
