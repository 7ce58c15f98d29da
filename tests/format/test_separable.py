"""Depthwise-separable conv blocks: spec, build, the .mincap format (versions 2 and 3), export, pruning."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_container import _check_roundtrip, _layers

from mincap.compression.prune import prune_structured
from mincap.compression.qat import qat_plan
from mincap.config import CompressConfig, TrainConfig
from mincap.errors import MincapError
from mincap.format import container as artifact
from mincap.format.container import decode, encode
from mincap.format.spec import SEPARABLE
from mincap.format.writer import export
from mincap.nets import quant
from mincap.nets.models import PRESETS, Conv, Spec, build, count_params, parse_arch, pruned_spec
from mincap.training.batched import train_many

SEP = Spec(convs=(Conv(6, 3, pool=2, pad=1), Conv(10, 3, pad=1, separable=True), Conv(12, 3, separable=True)),
           head="gap")


def test_json_form_and_weight_count():
    assert parse_arch(SEP.to_json()) == SEP
    assert SEP.to_dict()["convs"][1] == [10, 3, 1, 1, 1, 1] and SEP.to_dict()["convs"][0] == [6, 3, 1, 2, 1]
    # conv 1->6 (54+6), dw 6 (54+6) + pw 6->10 (60+10), dw 10 (90+10) + pw 10->12 (120+12), linear 12->10 (130)
    assert count_params(build(SEP)) == 60 + 60 + 70 + 100 + 132 + 130
    with pytest.raises(MincapError, match="separable must be 0 or 1"):
        parse_arch('{"family":"cnn","convs":[[8,3,1,1,1,2]]}')


def test_format_version_2_only_for_separable_specs():
    rng = np.random.default_rng(0)
    # Codes uniform over all 2^bits values (asymmetric): no shared ANS table (version 4) pays.
    data, _ = _check_roundtrip(SEP, _layers(SEP, 3, rng, symmetric=False))
    assert data[2] == 2
    plain = Spec(convs=(Conv(6, 3, pool=2, pad=1),), head="gap")
    assert encode(plain, _layers(plain, 3, rng, symmetric=False))[2] == 1  # unchanged files for plain networks


def test_a_version_1_file_claiming_separable_blocks_is_refused():
    import zlib

    data = bytearray(encode(SEP, _layers(SEP, 3, np.random.default_rng(1))))
    assert data[3] & SEPARABLE
    data[2] = 1
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    with pytest.raises(MincapError, match="corrupt spec"):
        decode(bytes(data))


def _quantized(spec):
    m = build(spec)
    qs, _ = qat_plan(m, TrainConfig(), CompressConfig(bits=4))
    quant.attach_fake_quant(m, qs, enabled=True)
    return m.eval()


def test_export_decodes_to_the_same_function_and_pruning_keeps_blocks_consistent():
    spec = PRESETS["sep-700"]
    m = _quantized(spec)
    x = torch.rand(8, 1, 28, 28)
    dec = decode(export(m, spec))
    assert dec.spec.convs == spec.convs
    assert (dec.model(x) - m(x)).abs().max() < 0.02  # 8-bit scales and biases only
    p = build(spec).eval()
    removed = prune_structured(p, 0.3)
    got = pruned_spec(p, spec)
    assert all(c.separable == o.separable for c, o in zip(got.convs, spec.convs))
    assert all(c.channels < o.channels for c, o in zip(got.convs, spec.convs))
    depthwise = [i for i, mod in enumerate(quant.quant_layers(p)) if getattr(mod, "groups", 1) > 1]
    assert removed and not set(removed) & set(depthwise)  # depthwise convs follow the layer before them
    assert p(x).shape == (8, 10)


def _with_big_depthwise_biases(m):
    with torch.no_grad():
        for mod in quant.quant_layers(m):
            if getattr(mod, "groups", 1) > 1:
                mod.bias.copy_(torch.linspace(-2.0, 3.0, mod.bias.numel()))
    return m


@pytest.mark.parametrize("per_channel", [True, False])
def test_depthwise_biases_are_folded_into_the_pointwise_conv_and_cost_no_bits(per_channel, monkeypatch):
    # SEP's separable blocks are padded: the depthwise bias is still a constant per channel.
    spec = replace(SEP, batch_norm=True)
    m = build(spec)
    qs, _ = qat_plan(m, TrainConfig(), CompressConfig(bits=4, per_channel=per_channel))
    quant.attach_fake_quant(m, qs, enabled=True)
    m = _with_big_depthwise_biases(m).eval()
    x = torch.rand(8, 1, 28, 28)
    packed = export(m, spec)  # version 5 where shorter; the fold's bit counts below are version 3's
    monkeypatch.setattr(artifact, "bias_width", lambda layers: None)
    data = export(m, spec)
    dec = decode(data)
    assert data[2] == 3 and len(packed) <= len(data)
    assert torch.equal(decode(packed).model(x), dec.model(x))  # version 5 packs the same 8-bit side
    assert (dec.model(x) - m(x)).abs().max() < 0.05  # the fold is exact up to the 8-bit side rounding
    rows = dec.size["layers"]
    depthwise = [r for r in rows if r["shape"][1] == 1 and r["kind"] == "conv" and r["layer"] > 0]
    assert len(depthwise) == 2
    assert all(r["bias_bits"] == 16 and r["n_nonzero_biases"] == 0 for r in depthwise)  # a step of 0, no biases
    pointwise = rows[2]
    assert pointwise["bias_bits"] == 16 + 8 * 10
    # Per-layer scales: a depthwise conv and the head (no batch norm after them) store one
    # float16 scale; the convs batch norm follows keep their folded per-channel scales.
    assert depthwise[0]["scale_bits"] == (16 + 8 * 6 if per_channel else 16)
    assert rows[-1]["scale_bits"] == (16 + 8 * 10 if per_channel else 16)
    assert rows[-1]["bias_bits"] == 16 + 8 * 10
    assert pointwise["scale_bits"] == 16 + 8 * 10


def test_without_the_fold_the_same_network_differs():
    # The fold is what keeps the decoded network right: drop the carried bias and it shows.
    m = _with_big_depthwise_biases(_quantized(SEP))
    x = torch.rand(8, 1, 28, 28)
    dec = decode(export(m, SEP))
    with torch.no_grad():
        for mod in quant.quant_layers(m):
            if getattr(mod, "groups", 1) > 1:
                mod.bias.zero_()
    assert (dec.model(x) - m(x)).abs().max() > 0.1


def test_batched_training_refuses_separable_blocks(mnist_small):
    with pytest.raises(MincapError, match="separable"):
        train_many([SEP], mnist_small, [TrainConfig(epochs=1)])
