"""Quantizer: code ranges, dequantization error, straight-through gradients, BN folding at export."""

from __future__ import annotations

import pytest
import torch

from mincap.quant import (
    QuantSpec,
    attach_fake_quant,
    code_range,
    dequantize,
    quantize_tensor,
    set_fake_quant,
)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_codes_in_range_and_error_bounded(bits, per_channel, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(6, 4, 3, 3)
    q = QuantSpec(bits, per_channel, symmetric)
    codes, scale, zp = quantize_tensor(w, q)
    lo, hi = code_range(bits, symmetric)
    assert codes.min() >= lo and codes.max() <= hi
    assert scale.numel() == (6 if per_channel else 1)
    wq = dequantize(codes, scale, zp)
    if bits == 1 and symmetric:
        assert set(codes.unique().tolist()) <= {-1, 1}
        assert torch.equal(torch.sign(wq), torch.where(w >= 0, 1.0, -1.0))
    else:
        step = scale.reshape(-1, 1, 1, 1) if per_channel else scale
        assert ((wq - w).abs() <= step / 2 + 1e-6).all()


def test_zero_weights_stay_exactly_zero():
    w = torch.randn(4, 10)
    w[:, :5] = 0
    for symmetric in (True, False):
        codes, scale, zp = quantize_tensor(w, QuantSpec(3, True, symmetric))
        assert (dequantize(codes, scale, zp)[:, :5] == 0).all()


def test_fake_quant_straight_through_gradient_and_switch():
    lin = torch.nn.Linear(8, 3)
    attach_fake_quant(lin, [QuantSpec(2)])
    w_float = lin.weight.detach().clone()
    assert torch.equal(lin.weight, w_float)  # disabled: float
    set_fake_quant(lin, True)
    assert lin.weight.detach().unique().numel() <= 3 * 3  # 3 levels per channel
    lin.weight.sum().backward()
    assert torch.equal(lin.parametrizations.weight.original.grad, torch.ones(3, 8))


def test_bn_folding_float_export_matches_model():
    from mincap.artifact import decode
    from mincap.compress import export
    from mincap.models import PRESETS, build

    torch.manual_seed(0)
    model = build(PRESETS["tiny"])
    for m in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(16, 1, 28, 28)
    dec = decode(export(model, model.spec))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in dec.model.modules())
    torch.testing.assert_close(dec.model(x), model(x), atol=1e-4, rtol=1e-4)

    attach_fake_quant(model, [QuantSpec(8)] * 4, enabled=True)
    ref = model(x)
    dec8 = decode(export(model, model.spec))
    torch.testing.assert_close(dec8.model(x), ref, atol=0.05, rtol=0.05)  # float16 scales/biases only
