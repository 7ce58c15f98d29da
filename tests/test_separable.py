"""Depthwise-separable conv blocks: spec, build, the .mincap format (version 2), export, pruning."""

import numpy as np
import pytest
import torch
from test_artifact import _check_roundtrip, _layers

from mincap import quant
from mincap.artifact import SEPARABLE, decode, encode
from mincap.batched import train_many
from mincap.compress import export, prune_structured, pruned_spec, qat_plan
from mincap.config import CompressConfig, TrainConfig
from mincap.errors import MincapError
from mincap.models import PRESETS, Conv, Spec, build, count_params, parse_arch

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
    data, _ = _check_roundtrip(SEP, _layers(SEP, 3, rng))
    assert data[2] == 2
    plain = Spec(convs=(Conv(6, 3, pool=2, pad=1),), head="gap")
    assert encode(plain, _layers(plain, 3, rng))[2] == 1  # unchanged files for plain networks


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


def test_batched_training_refuses_separable_blocks(mnist_small):
    with pytest.raises(MincapError, match="separable"):
        train_many([SEP], mnist_small, [TrainConfig(epochs=1)])
