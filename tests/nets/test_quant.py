"""Quantizer: code ranges, dequantization error, straight-through gradients, BN folding at export."""

from __future__ import annotations

import pytest
import torch

from mincap.nets.quant import (
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
    from mincap.format.container import decode
    from mincap.format.writer import export
    from mincap.nets.models import PRESETS, build

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


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lsq_gradients_reach_the_scales_and_codes_stay_in_range(bits):
    from mincap.nets.quant import layer_scale

    torch.manual_seed(bits)
    conv = torch.nn.Conv2d(3, 5, 3)
    attach_fake_quant(conv, [QuantSpec(bits, method="lsq")], enabled=True)
    fq = conv.parametrizations.weight[0]
    x = torch.randn(4, 3, 8, 8)
    (conv(x) ** 2).mean().backward()
    assert fq.log_step.grad is not None and fq.log_step.grad.abs().min() > 0  # every channel's step learns
    assert conv.parametrizations.weight.original.grad.abs().sum() > 0
    scale = layer_scale(conv)
    codes = conv.weight.detach() / scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    lo, hi = code_range(bits, True)
    assert codes.min() >= lo - 1e-4 and codes.max() <= hi + 1e-4
    if bits == 1:
        assert set(codes.round().unique().tolist()) <= {-1.0, 1.0}
    # an optimizer step moves the learned steps
    before = fq.log_step.detach().clone()
    torch.optim.SGD(conv.parameters(), lr=0.5).step()
    assert not torch.equal(before, fq.log_step.detach())


def test_mse_scale_beats_max_scale_at_two_bits():
    from mincap.nets.quant import mse_scale

    torch.manual_seed(0)
    w = torch.randn(8, 200)
    err = {}
    for method in ("max", "mse"):
        codes, scale, zp = quantize_tensor(w, QuantSpec(2, method=method))
        err[method] = (dequantize(codes, scale, zp) - w).pow(2).sum(dim=1)
    assert (err["mse"] <= err["max"] + 1e-6).all() and err["mse"].sum() < 0.8 * err["max"].sum()
    assert torch.equal(quantize_tensor(w, QuantSpec(2, method="mse"))[1], mse_scale(w, 2))


def test_lsq_export_uses_the_learned_scale():
    from mincap.format.container import decode
    from mincap.format.writer import export
    from mincap.nets.models import PRESETS, build

    torch.manual_seed(0)
    model = build(PRESETS["tiny"]).eval()
    attach_fake_quant(model, [QuantSpec(3, method="lsq")] * 4, enabled=True)
    x = torch.rand(16, 1, 28, 28)
    model(x)  # initializes the steps
    fqs = [m.parametrizations.weight[0] for m in (model.features[0], model.features[4], model.features[8])]
    with torch.no_grad():
        for fq in fqs:
            fq.log_step.add_(0.3)  # a learned step, no longer the MSE-optimal start
        expect = model(x)
    got = decode(export(model, model.spec)).model(x)
    assert (got - expect).abs().max() < 0.05 * expect.abs().max()


def test_anneal_schedule_steps_down_to_the_target():
    from mincap.compression.qat import anneal_bits

    assert [anneal_bits(2, k, 2) for k in range(4)] == [6, 4, 2, 2]
    assert [anneal_bits(3, k, 0) for k in range(2)] == [3, 3]
    assert [anneal_bits(8, k, 3) for k in range(2)] == [8, 8]


def test_annealed_width_reinitializes_the_learned_step():
    from mincap.nets.quant import set_fake_quant_bits

    lin = torch.nn.Linear(30, 4)
    attach_fake_quant(lin, [QuantSpec(2, method="lsq")], enabled=True)
    fq = lin.parametrizations.weight[0]
    set_fake_quant_bits(lin, lambda q: 6)
    assert lin.weight.detach().unique().numel() > 3 * 4  # 6-bit levels
    s6 = fq.log_step.detach().clone()
    set_fake_quant_bits(lin, lambda q: q.bits)
    lin.weight  # noqa: B018 (forward re-initializes at the new width)
    assert (fq.log_step.detach() > s6).all()  # a 2-bit step is wider
