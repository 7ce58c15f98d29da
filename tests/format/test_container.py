"""The .mincap format: bit-exact round trips, compact coding, refusal of damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from mincap.cli import main
from mincap.errors import MincapError
from mincap.format import container as artifact
from mincap.format.codes import LayerCodes
from mincap.format.container import decode, encode
from mincap.format.side import CompactSide
from mincap.format.spec import layer_shapes
from mincap.nets.models import Conv, Spec
from mincap.nets.quant import code_range

SPEC = Spec(convs=(Conv(6, 3, pool=2, pad=1), Conv(12, 3, pool=2, pad=1), Conv(16, 3, pad=1)), head="gap")


def _layers(spec, bits, rng, *, symmetric=True, per_channel=True, fill=None, sparsity=0.0):
    out = []
    for shape, n_out in layer_shapes(spec):
        lo, hi = code_range(bits, symmetric)
        if bits == 1 and symmetric:
            codes = rng.choice([-1, 1], size=shape)
        else:
            codes = rng.integers(lo, hi + 1, size=shape)
        if fill is not None:
            codes = np.full(shape, fill)
        if sparsity:
            codes = np.where(rng.random(shape) < sparsity, 0 if symmetric else lo, codes)
        n_s = n_out if per_channel else 1
        if symmetric and per_channel:
            side = CompactSide.from_float(rng.uniform(0.01, 1, n_out), rng.normal(size=n_out))
            out.append(LayerCodes(bits, codes=codes.astype(np.int64), side=side))
            continue
        out.append(LayerCodes(
            bits, codes=codes.astype(np.int64), scale=rng.uniform(0.01, 1, n_s).astype(np.float16),
            zero_point=rng.integers(lo, hi + 1, n_s).astype(np.uint8) if not symmetric else np.zeros(n_s, np.uint8),
            bias=rng.normal(size=n_out).astype(np.float16), per_channel=per_channel, symmetric=symmetric,
        ))
    return out


def _check_roundtrip(spec, layers):
    import torch

    from mincap.nets.quant import quant_layers

    data = encode(spec, layers)
    dec = decode(data)
    assert dec.spec == spec
    for lay, got, mod in zip(layers, dec.layers, quant_layers(dec.model)):
        assert got.bits == lay.bits
        if lay.bits:
            np.testing.assert_array_equal(got.codes, lay.codes)
            np.testing.assert_array_equal(got.float_scale(), lay.float_scale())
            if not lay.symmetric:
                np.testing.assert_array_equal(got.zero_point, lay.zero_point)
        # the decoded network's weights are bit for bit the format's dequantization rule
        assert torch.equal(mod.weight.detach(), torch.from_numpy(lay.float_weight()))
        assert torch.equal(mod.bias.detach(), torch.from_numpy(lay.float_bias()))
    assert dec.size["artifact_bits"] == 8 * len(data)
    return data, dec


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("symmetric", [True, False])
def test_random_codes_roundtrip_every_width(bits, symmetric):
    rng = np.random.default_rng(bits)
    _check_roundtrip(SPEC, _layers(SPEC, bits, rng, symmetric=symmetric, per_channel=bits % 2 == 0))
    _check_roundtrip(SPEC, _layers(SPEC, bits, rng, symmetric=symmetric, per_channel=bits % 2 == 1))


def test_compact_side_is_close_and_idempotent():
    rng = np.random.default_rng(9)
    scale, bias = rng.uniform(0.001, 2, 50), rng.normal(size=50)
    side = CompactSide.from_float(scale, bias)
    np.testing.assert_allclose(side.scale(), scale, rtol=0.012)
    assert np.abs(side.bias() - bias).max() <= np.abs(bias).max() / 250
    again = CompactSide.from_float(side.scale(), side.bias())
    np.testing.assert_array_equal(again.scale(), side.scale())
    np.testing.assert_array_equal(again.bias(), side.bias())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_all_zero_single_value_and_sparse_layers_roundtrip(bits):
    rng = np.random.default_rng(0)
    _check_roundtrip(SPEC, _layers(SPEC, bits, rng, fill=0))
    _check_roundtrip(SPEC, _layers(SPEC, bits, rng, fill=1))
    _, dec = _check_roundtrip(SPEC, _layers(SPEC, bits, rng, sparsity=0.9))
    assert dec.size["n_nonzero"] < 0.2 * dec.size["n_params"]


def test_skewed_codes_use_an_entropy_coder_and_beat_raw_bits():
    rng = np.random.default_rng(1)
    layers = _layers(SPEC, 4, rng)
    for lay in layers:  # peaked, Laplace-like codes, as trained weights are
        lay.codes = np.clip(np.round(rng.laplace(0, 1.0, lay.codes.shape)), -7, 7).astype(np.int64)
    data, dec = _check_roundtrip(SPEC, layers)
    methods = {row["method"] for row in dec.size["layers"]}
    assert methods & {"ans", "zstd", "lzma"}
    n_codes = sum(lay.codes.size for lay in layers)
    assert 8 * len(data) < 4 * n_codes  # below the nominal 4 bits a weight, side information included


def test_small_layers_share_one_ans_table_version_4(monkeypatch):
    # A small network's layers are too short to pay for a table each: one pooled table per width.
    rng = np.random.default_rng(5)
    layers = _layers(SPEC, 4, rng)
    for lay in layers:
        lay.codes = np.clip(np.round(rng.laplace(0, 1.5, lay.codes.shape)), -7, 7).astype(np.int64)
    data, dec = _check_roundtrip(SPEC, layers)
    assert data[2] == 4 and {row["method"] for row in dec.size["layers"]} == {"ans"}
    monkeypatch.setattr(artifact, "share_tables", lambda layers: {})
    own, dec_own = _check_roundtrip(SPEC, layers)
    assert own[2] < 4 and len(data) < len(own)  # the same codes, own tables or raw: larger
    # what the shared table saved is what the layers' code bits say
    assert sum(r["total_bits"] for r in dec.size["layers"]) < sum(r["total_bits"] for r in dec_own.size["layers"])


def test_uniform_codes_keep_the_older_version():
    # Uniform codes over all 2^bits values: nothing for a table to gain, so the file is written as
    # before version 4, byte for byte. (Symmetric codes use 2^bits - 1 values: a table gains there.)
    rng = np.random.default_rng(6)
    data = encode(SPEC, _layers(SPEC, 4, rng, symmetric=False))
    assert data[2] < 4


def test_float32_reference_layers_roundtrip():
    rng = np.random.default_rng(2)
    layers = [LayerCodes(0, weight=rng.normal(size=s).astype(np.float32), bias=rng.normal(size=n).astype(np.float32))
              for s, n in layer_shapes(SPEC)]
    data, dec = _check_roundtrip(SPEC, layers)
    n = sum(int(np.prod(s)) + o for s, o in layer_shapes(SPEC))
    assert dec.size["n_params"] == n and 8 * len(data) > 32 * n


def test_spec_variants_roundtrip():
    rng = np.random.default_rng(3)
    for spec in (
        Spec(family="mlp", hidden=(7, 5), activation="tanh"),
        Spec(convs=(Conv(3, 5, stride=2, pool=1, pad=2),), hidden=(9,), in_shape=(3, 12, 10), n_classes=4),
    ):
        _check_roundtrip(spec, _layers(spec, 3, rng))


def test_constant_weights_are_far_smaller_than_random_codes():
    rng = np.random.default_rng(4)
    const = encode(SPEC, _layers(SPEC, 4, rng, fill=3))
    rand = encode(SPEC, _layers(SPEC, 4, rng))
    assert len(const) * 3 < len(rand)
    side = sum(2 * (16 + 8 * n) for _, n in layer_shapes(SPEC))  # 8-bit scales + biases, two float16
    assert 8 * len(const) < side + 400  # codes nearly free: only headers, spec and CRC on top


@pytest.fixture(scope="module")
def small_file():
    rng = np.random.default_rng(5)
    spec = Spec(convs=(Conv(2, 3, pool=2),), hidden=(3,))
    return encode(spec, _layers(spec, 3, rng))


def test_every_single_byte_flip_is_refused(small_file):
    for i in range(len(small_file)):
        bad = bytearray(small_file)
        bad[i] ^= 0x5A
        with pytest.raises(MincapError):
            decode(bytes(bad))


def test_truncated_files_are_refused(small_file):
    for n in range(len(small_file)):
        with pytest.raises(MincapError):
            decode(small_file[:n])


def _verify_rc(tmp_path, data: bytes, capsys) -> int:
    p = tmp_path / "x.mincap"
    p.write_bytes(data)
    rc = main(["verify", str(p)])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mincap: error: artifact")
    return rc


def test_cli_refuses_damaged_files_with_exit_2(tmp_path, small_file, capsys):
    flipped = bytearray(small_file)
    flipped[len(flipped) // 2] ^= 1
    future = bytearray(small_file)
    future[2] = artifact.VERSION + 1
    for bad in (bytes(flipped), small_file[:-1], small_file[: len(small_file) // 2], b"XX" + small_file[2:],
                bytes(future)):
        assert _verify_rc(tmp_path, bad, capsys) == 2


def test_future_version_message(small_file):
    future = bytearray(small_file)
    future[2] = artifact.VERSION + 1
    with pytest.raises(MincapError, match="newer"):
        decode(bytes(future))
    assert main(["verify", "/nonexistent/x.mincap"]) == 2


def test_layer_counts_keep_weights_and_biases_apart():
    """Per layer n_nonzero counts weights only (never more than n_weights); the totals count both."""
    rng = np.random.default_rng(2)
    _, dec = _check_roundtrip(SPEC, _layers(SPEC, 4, rng, sparsity=0.9))
    rows = dec.size["layers"]
    for row, (shape, n_out) in zip(rows, layer_shapes(SPEC), strict=True):
        assert row["n_nonzero"] <= row["n_weights"] == int(np.prod(shape))
        assert row["n_nonzero_biases"] <= row["n_biases"] == n_out
    assert dec.size["n_params"] == sum(r["n_weights"] + r["n_biases"] for r in rows)
    assert dec.size["n_nonzero"] == sum(r["n_nonzero"] + r["n_nonzero_biases"] for r in rows)
    assert sum(r["n_nonzero"] for r in rows) < 0.2 * sum(r["n_weights"] for r in rows)  # 90% sparse weights


def test_verify_on_the_wrong_dataset_is_one_line_naming_the_fitting_ones(tmp_path, mnist_root, capsys):
    """A 7x7 network measured on 28x28 MNIST used to give ~10% and exit 0."""
    spec = Spec(convs=(Conv(4, 3, pad=1),), batch_norm=False, head="gap", in_shape=(1, 7, 7))
    f = tmp_path / "seven.mincap"
    artifact.write(f, encode(spec, _layers(spec, 4, np.random.default_rng(0))))
    assert main(["verify", str(f), "--dataset", "mnist", "--data-dir", str(mnist_root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "7x7 inputs and 10 classes" in err[0] and "--dataset (mnist-7)" in err[0], err


# --- format version 5: the side information packed at its widths -------------------------------


def _with_side_bits(layers, rng, side_bits):
    for lay in layers:
        n = lay.codes.shape[0]
        lay.side = CompactSide.from_float(rng.uniform(0.2, 1, n), rng.normal(size=n), side_bits)
    return layers


@pytest.mark.parametrize("side_bits", [2, 4, 5, 6, 7, 8])
def test_fewer_side_bits_keep_biases_in_range_and_exponents_on_their_grid(side_bits):
    from mincap.format.side import side_shift

    rng = np.random.default_rng(side_bits)
    scale, bias = rng.uniform(0.01, 1, 300), rng.normal(size=300)  # 6.6 octaves: inside the 2^8 range
    side = CompactSide.from_float(scale, bias, side_bits)
    lim = 2 ** (side_bits - 1) - 1
    assert np.abs(side.bias_k.astype(int)).max() == lim  # the largest bias takes the top code
    assert np.all(side.scale_k.astype(int) % 2 ** side_shift(side_bits) == 0)
    # the error of a scale is at most half a grid step (in log2: grid / 64), of a bias half a bias step
    grid = 2 ** side_shift(side_bits)
    assert np.abs(np.log2(side.scale() / scale)).max() <= grid / 64 + 1e-3
    assert np.abs(side.bias() - bias).max() <= float(side.bias_step) / 2 + 1e-6
    with pytest.raises(ValueError, match="side_bits"):
        CompactSide.from_float(scale, bias, 1)


def test_version_5_roundtrips_and_saves_more_at_fewer_side_bits():
    from mincap.format.spec import spec_bytes

    sizes = {}
    for side_bits in (8, 7, 6, 5, 4):
        rng = np.random.default_rng(11)
        layers = _with_side_bits(_layers(SPEC, 4, rng), rng, side_bits)
        data, dec = _check_roundtrip(SPEC, layers)
        sizes[side_bits] = len(data)
        if side_bits < 8:
            assert data[2] == 5 and data[3 + len(spec_bytes(SPEC))] == side_bits  # the version; the bias width
        np.testing.assert_array_equal(np.concatenate([d.side.bias_k for d in dec.layers]),
                                      np.concatenate([lay.side.bias_k for lay in layers]))
    assert sizes[8] >= sizes[7] > sizes[6] > sizes[5] > sizes[4]
    # per layer, about (8 - B) bits per bias and per exponent saved, less a byte of widths
    n_out = sum(n for _, n in layer_shapes(SPEC))
    assert 8 * (sizes[8] - sizes[4]) > n_out * (4 + 3) - 8 * len(layer_shapes(SPEC))


def test_version_5_is_written_only_when_it_is_shorter():
    rng = np.random.default_rng(12)
    layers = _layers(SPEC, 4, rng)
    for lay in layers:  # exponents spanning 0..255 and biases at +-127: nothing for packing to save
        n = lay.codes.shape[0]
        k = rng.integers(0, 256, n).astype(np.uint8)
        k[0], k[1] = 255, 1
        lay.side = CompactSide(np.float16(1.0), k, np.float16(0.01), np.clip(rng.integers(-127, 128, n), -127, 127)
                               .astype(np.int8))
        lay.side.bias_k[0] = 127
    data, _ = _check_roundtrip(SPEC, layers)
    assert data[2] < 5


def test_an_int8_bias_of_minus_128_keeps_the_older_version():
    rng = np.random.default_rng(13)
    layers = _with_side_bits(_layers(SPEC, 4, rng), rng, 5)
    layers[0].side.bias_k[0] = -128
    data, dec = _check_roundtrip(SPEC, layers)
    assert data[2] < 5 and dec.layers[0].side.bias_k[0] == -128


def _recrc(body: bytes) -> bytes:
    import zlib

    return body + zlib.crc32(body).to_bytes(4, "little")


@pytest.fixture(scope="module")
def v5_file():
    rng = np.random.default_rng(14)
    spec = Spec(convs=(Conv(2, 3, pool=2),), hidden=(3,))
    data = encode(spec, _with_side_bits(_layers(spec, 3, rng), rng, 5))
    assert data[2] == 5
    return spec, data


def test_version_5_damage_and_truncation_are_refused(v5_file):
    _, data = v5_file
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        with pytest.raises(MincapError):
            decode(bytes(bad))
    for n in range(len(data)):
        with pytest.raises(MincapError):
            decode(data[:n])


def test_version_5_refuses_a_bad_bias_width_exponent_width_or_bias_code(v5_file):
    from mincap.format.spec import spec_bytes

    spec, data = v5_file
    at = 3 + len(spec_bytes(spec))  # the bias-width byte
    for width in (0, 1, 9):
        body = bytearray(data[:-4])
        body[at] = width
        with pytest.raises(MincapError, match="corrupt bias width"):
            decode(_recrc(bytes(body)))
    body = bytearray(data[:-4])
    body[at + 1 + 1 + 2] = 9  # first layer: header byte, float16 base, then kw | shift << 4
    with pytest.raises(MincapError, match="corrupt scale exponent width"):
        decode(_recrc(bytes(body)))
    # a bias code of 2^W - 1 (the width's all-ones) is not one the encoder writes
    layers = decode(data).layers
    n_out, kw = layers[0].side.bias_k.size, data[at + 4] & 15
    bits_before = n_out * kw  # the exponents come first in the packed run
    start = at + 1 + 1 + 2 + 1 + 2
    body = bytearray(data[:-4])
    for b in range(5):  # W = 5: set the first bias code's 5 bits
        pos = bits_before + b
        body[start + pos // 8] |= 1 << (pos % 8)
    with pytest.raises(MincapError, match="corrupt bias"):
        decode(_recrc(bytes(body)))
