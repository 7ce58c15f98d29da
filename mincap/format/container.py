"""The `.mincap` file: a self-contained, versioned, checksummed network.

A network's size in mincap is `8 * len(file)`. The file holds everything the
fixed decoder (`decode` + `mincap.nets.models.build` + `mincap.nets.models.prepare`) needs
to rebuild exactly the evaluated network, and nothing else is read.

Layout (all integers little-endian; "varint" = LEB128, 7 bits a byte)::

    magic  b"MC"                     2 bytes
    version                          1 byte  (this decoder reads versions 1 to 5; a file is written
                                     at the lowest version that holds it, so older files are unchanged:
                                     2 when a conv block is depthwise-separable, 3 when a layer uses
                                     the version-3 side described below, 4 when layers share an ANS
                                     table; 5, the packed side below, only when it is shorter)
    spec                             binary, see `_spec_bytes` (~10 bytes)
    version 5: bias width W          1 byte, 2..8: the width of every compact layer's bias codes
    per conv/linear layer, in model order:
        layer byte: bits (low 4 bits; 0 = float32) | per_channel << 4 | symmetric << 5 | method << 6
        bits == 0:  weights float32, bias float32
        bits >= 1, symmetric per-channel: scale base float16, one uint8 scale exponent per channel,
                    bias step float16, one int8 bias per channel (`CompactSide`), then the codes;
        bits >= 1, otherwise: scales float16 (one per output channel, or one), zero points uint8
                    (asymmetric only), bias float16 (one per output channel), then the codes.
        Version 3 changes the symmetric layers' side only: a bias step of 0 means every bias is 0
                    and no int8 biases follow (a depthwise conv, whose bias export folds into the
                    pointwise conv after it), and a symmetric per-layer-scale layer stores one
                    float16 scale, then the bias step and int8 biases, instead of float16 biases.
        Version 5 changes the compact (symmetric) layers' side only: scale base float16, then (per
                    channel only) a byte kw | shift << 4, bias step float16, then one bit-packed
                    run, padded to a byte: each exponent >> shift at kw bits, then (bias step != 0)
                    each bias code + 2^(W-1) - 1 at W bits (codes in +-(2^(W-1) - 1)). Written where
                    it is shorter; fewer side bits (`CompactSide.from_float(side_bits=B)`: exponents
                    on a grid of 2^(7-B), biases in +-(2^(B-1) - 1)) make it shorter still.
        The codes, by `method`, stored as symbols (code + 2^(bits-1) - 1, or (code + 1) / 2 at
        1 bit; the byte-level layout of every field is `docs/format.md`):
                    0 raw   sym_lo, sym_hi bytes, symbol - sym_lo bit-packed at bitlen(sym_hi - sym_lo)
                    1 zstd  varint length, magicless zstd frame of one byte per symbol
                    2 lzma  varint length, raw LZMA2 stream (64 KiB dictionary) of one byte per symbol
                    3 ans   sym_lo, sym_hi bytes, a probability table of one nibble per symbol in
                            [sym_lo, sym_hi] (p ~ 2^((q - 15) / 2), q = 0: unused); the codes
                            themselves go into the shared ANS stream. Version 4: sym_lo, sym_hi,
                            then a byte: 0, the layer's own table follows (as above); 1, the table
                            shared by the layers of this width, signedness and [sym_lo, sym_hi]:
                            it follows at the first such layer and is reused by the later ones
    ANS stream                       constriction's AnsCoder words (uint32), all "ans" layers,
                                     trailing zero bytes of the last word dropped
    CRC32 of everything before it    4 bytes

Each layer's codes take whichever of the four methods is smallest (the choice is
the two `method` bits); the categorical model of an ANS layer is in the file and
counted. A small network's layers are too short to pay for a table each (a 72-weight 4-bit
layer: 64 bits of table against ~30 saved); one table pooled over the layers of a width (version
4) is paid once, used where it beats a layer's own best method by more than it costs
(`mincap.format.codes.share_tables`). The layer shapes are not stored: they follow from the spec.

What is stored and at which width: weight codes (entropy coded, see above);
for symmetric per-channel layers (the default) each channel's scale as an 8-bit
log-scale exponent of a float16 base (1.1% steps) and its bias -- including the
one batch norm was folded into -- as an int8 multiple of a float16 step; for
the other layers scales and biases as float16 (16 bits each) and asymmetric
zero points as uint8. All of these are counted in the file's length. Batch norm never appears in a file: the spec stored has
`batch_norm=False` and every conv/linear layer has a bias. Dropout is a
training-time layer and is stored as 0. A sparsity mask is not a separate
section: a pruned weight is the code for 0.0 and the entropy model pays for
it. Activations are float32 at inference (a fixed part of the decoder).

`decode` refuses a file with a wrong magic, a future version, a bad checksum or
a truncated body with `MincapError` (exit code 2).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import constriction
import numpy as np
import torch
import torch.nn as nn

from mincap.errors import MincapError
from mincap.format.bits import Reader, pack_bits, unpack_bits
from mincap.format.codes import (
    CODE_METHODS,
    LayerCodes,
    best_method,
    bias_width,
    categorical,
    code_options,
    nibble_table,
    read_symbols,
    share_tables,
    size_report,
    table_probs,
)
from mincap.format.side import CompactSide, packed_side, read_packed_side
from mincap.format.spec import SEPARABLE, layer_shapes, read_spec, spec_bytes
from mincap.nets.models import Spec, build
from mincap.nets.quant import code_range, quant_layers

__all__ = ["MAGIC", "SEPARABLE", "VERSION", "CompactSide", "Decoded", "LayerCodes", "decode", "encode", "layer_shapes", "read", "write"]

MAGIC = b"MC"
VERSION = 5  # the newest this decoder reads; a file is written at the lowest version that holds it
METHODS = CODE_METHODS  # the two method bits of a layer byte


@dataclass
class Decoded:
    spec: Spec
    model: nn.Module
    layers: list[LayerCodes]
    size: dict


# ---------------------------------------------------------------------------- spec


# ---------------------------------------------------------------------------- encode


def _symbols(layer: LayerCodes) -> np.ndarray:
    lo, hi = code_range(layer.bits, layer.symmetric)
    c = layer.codes.reshape(-1).astype(np.int64)
    if c.size and (c.min() < lo or c.max() > hi):
        raise ValueError(f"artifact: codes outside [{lo}, {hi}] for {layer.bits} bits")
    if layer.bits == 1 and layer.symmetric:
        if np.any(c == 0):
            raise ValueError("artifact: 1-bit symmetric codes are -1 or +1")
        return (c + 1) // 2
    return c - lo


def _from_symbols(sym: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    if bits == 1 and symmetric:
        return sym * 2 - 1
    return sym + code_range(bits, symmetric)[0]


def encode(spec: Spec, layers: list[LayerCodes]) -> bytes:
    """The `.mincap` bytes of `spec` (batch norm folded) with `layers` (one per conv/linear)."""
    spec = replace(spec, dropout=0.0)
    shapes = layer_shapes(spec)
    if len(shapes) != len(layers):
        raise ValueError(f"artifact: {len(layers)} layers for a spec with {len(shapes)}")
    # Each layer's symbols and code options once: the table sharing and the layer loop both use them.
    coded = []
    for lay, (shape, _) in zip(layers, shapes):
        if lay.bits and tuple(lay.codes.shape) != shape:
            raise ValueError(f"artifact: codes shape {tuple(lay.codes.shape)} != {shape}")
        sym = _symbols(lay) if lay.bits else None
        coded.append(None if sym is None else (lay.bits, lay.symmetric, sym, code_options(sym)))
    misreads = any(_v3_misreads(lay) for lay in layers)
    shared = {} if misreads else share_tables(coded)
    version = 4 if shared else _version(spec, layers)
    if version >= 3 and misreads:
        raise ValueError("artifact: a symmetric per-layer-scale layer must be compact in a version-3 file")
    best = _write(spec, shapes, layers, coded, shared, version)
    width = None if misreads else bias_width(layers)
    if width is not None:  # version 5 packs the side at its widths: kept only where it is shorter
        methods = [lay.method for lay in layers]
        packed = _write(spec, shapes, layers, coded, shared, 5, width)
        if len(packed) < len(best):
            return packed
        for lay, m in zip(layers, methods):
            lay.method = m
    return best


def _write(spec: Spec, shapes, layers: list[LayerCodes], coded, shared, version: int,
           width: int | None = None) -> bytes:
    """The file at `version`; `width`: version 5's bias width."""
    out = bytearray(MAGIC) + bytes([version]) + spec_bytes(spec)
    if version >= 5:
        out.append(width)
    ans_jobs = []
    tables_sent: set = set()
    for i, ((shape, n_out), layer) in enumerate(zip(shapes, layers)):
        if layer.bits == 0:
            w = np.asarray(layer.weight, dtype="<f4")
            if w.shape != shape:
                raise ValueError(f"artifact: weight shape {w.shape} != {shape}")
            out.append(0)
            out += w.tobytes() + np.asarray(layer.bias, dtype="<f4").reshape(n_out).tobytes()
            layer.method = "float32"
            continue
        n_scale = n_out if layer.per_channel else 1
        _, _, sym, opts = coded[i]
        method = "ans" if i in shared else best_method(opts)
        layer.method = method
        out.append(layer.bits | layer.per_channel << 4 | layer.symmetric << 5 | METHODS.index(method) << 6)
        if layer.compact:
            sd = layer.side
            if sd is None:
                raise ValueError("artifact: a symmetric per-channel layer needs CompactSide scales/biases")
            out += np.asarray(sd.scale_base, dtype="<f2").tobytes()
            if layer.per_channel:
                if version < 5:
                    out += np.asarray(sd.scale_k, dtype=np.uint8).reshape(n_out).tobytes()
            elif np.any(np.asarray(sd.scale_k) != 0):
                raise ValueError("artifact: a per-layer compact scale is its float16 base (scale_k 0)")
            if version >= 5:  # exponents >> shift at kw bits, biases + lim at the file's width: one run
                out += packed_side(sd, layer.per_channel, n_out, width)
            else:
                out += np.asarray(sd.bias_step, dtype="<f2").tobytes()
            if version < 3 or (version < 5 and sd.has_bias):
                out += np.asarray(sd.bias_k, dtype=np.int8).reshape(n_out).tobytes()
        else:
            out += np.asarray(layer.scale, dtype="<f2").reshape(n_scale).tobytes()
            if not layer.symmetric:
                out += np.asarray(layer.zero_point, dtype=np.uint8).reshape(n_scale).tobytes()
            out += np.asarray(layer.bias, dtype="<f2").reshape(n_out).tobytes()
        if i in shared:
            key, q = shared[i]
            lo, hi = key[2], key[3]
            out += bytes([lo, hi, 1]) + (b"" if key in tables_sent else pack_bits(q, 4))
            tables_sent.add(key)
            ans_jobs.append((sym - lo, q))
            continue
        head = opts[method][0]
        if method == "ans" and version >= 4:  # sym_lo, sym_hi, 0 (own table), the table
            head = head[:2] + b"\0" + head[2:]
        out += head
        if method == "ans":
            lo, hi = int(sym.min()), int(sym.max())
            ans_jobs.append((sym - lo, nibble_table(sym - lo, hi - lo + 1)))
    if ans_jobs:
        coder = constriction.stream.stack.AnsCoder()
        for rel, q in reversed(ans_jobs):  # a stack: encode the last layer first
            coder.encode_reverse(rel.astype(np.int32), categorical(q))
        words = coder.get_compressed().astype("<u4").tobytes()
        while words and words[-1] == 0 and len(words) % 4 != 1:
            words = words[:-1]
        # Never strip a whole word: the decoder pads back to a multiple of 4 only.
        out += words
    out += zlib.crc32(bytes(out)).to_bytes(4, "little")
    return bytes(out)


def _v3_misreads(lay: LayerCodes) -> bool:
    """A layer versions 3 and later cannot hold: from version 3 on, a symmetric per-layer-scale
    layer is read as compact (one float16 scale, int8 biases); only hand-built layers are not."""
    return bool(lay.bits) and lay.symmetric and not lay.per_channel and not lay.compact


def _version(spec: Spec, layers: list[LayerCodes]) -> int:
    """The lowest format version that holds `layers`: old kinds of files stay byte-identical."""
    if any(lay.compact and (not lay.per_channel or not lay.side.has_bias) for lay in layers if lay.side is not None):
        return 3
    return 2 if any(c.separable for c in spec.convs) else 1


# ---------------------------------------------------------------------------- decode


def decode(data: bytes) -> Decoded:
    """Parse and check `data`, rebuild the network. Refuses bad files with `MincapError` (exit 2)."""
    data = bytes(data)
    if len(data) < 3 or data[:2] != MAGIC:
        raise MincapError("artifact: not a .mincap file (wrong magic)")
    if data[2] > VERSION:
        raise MincapError(f"artifact: format version {data[2]} is newer than this mincap reads ({VERSION})")
    if data[2] < 1:
        raise MincapError(f"artifact: unknown format version {data[2]}")
    if len(data) < 7:
        raise MincapError("artifact: truncated file")
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise MincapError("artifact: checksum mismatch (corrupted or truncated file)")
    try:
        return _decode_body(data)
    except MincapError:
        raise
    except Exception as err:  # a body that passed the CRC but does not parse
        raise MincapError(f"artifact: corrupt file ({type(err).__name__}: {err})") from None


def _decode_body(data: bytes) -> Decoded:
    end = len(data) - 4
    r = Reader(data, 3, end)
    version = data[2]
    spec = read_spec(r, version)
    width = r.byte() if version >= 5 else 8  # version 5: the bias width
    if not 2 <= width <= 8:
        raise MincapError("artifact: corrupt bias width")
    spec_bits = 8 * (r.pos - 3)  # version 5: with the bias-width byte
    shapes = layer_shapes(spec)
    layers: list[LayerCodes] = []
    pending = []  # (layer index, shape, table, n) of ans layers
    tables: dict[tuple, np.ndarray] = {}  # version 4: the shared ANS tables by (bits, symmetric, lo, hi)
    for i, (shape, n_out) in enumerate(shapes):
        start = r.pos
        n = math.prod(shape)
        head = r.byte()
        bits = head & 15
        if bits == 0:
            w = r.array("<f4", n).reshape(shape)
            b = r.array("<f4", n_out)
            lay = LayerCodes(0, weight=w, bias=b, method="float32")
            lay.stats = {"code_bits": 32 * n, "scale_bits": 0, "bias_bits": 32 * n_out}
        else:
            if bits > 8:
                raise MincapError("artifact: corrupt layer header")
            per_channel, symmetric, method = bool(head >> 4 & 1), bool(head >> 5 & 1), METHODS[head >> 6]
            n_scale = n_out if per_channel else 1
            if symmetric and version >= 5:
                side, side_bits = read_packed_side(r, per_channel, n_out, width)
                lay = LayerCodes(bits, side=side, per_channel=per_channel, symmetric=True, method=method)
            elif symmetric and (per_channel or version >= 3):
                base = r.array("<f2", 1)[0]
                scale_k = r.array(np.uint8, n_out) if per_channel else np.zeros(1, dtype=np.uint8)
                step = r.array("<f2", 1)[0]
                has_bias = version < 3 or float(step) != 0.0
                bias_k = r.array(np.int8, n_out) if has_bias else np.zeros(n_out, dtype=np.int8)
                side = CompactSide(base, scale_k, step, bias_k)
                lay = LayerCodes(bits, side=side, per_channel=per_channel, symmetric=True, method=method)
                side_bits = (16 + 8 * len(scale_k) * per_channel, 16 + 8 * n_out * has_bias)
            else:
                scale = r.array("<f2", n_scale)
                zp = np.zeros(n_scale, dtype=np.uint8) if symmetric else r.array(np.uint8, n_scale)
                bias = r.array("<f2", n_out)
                lay = LayerCodes(bits, scale=scale, zero_point=zp, bias=bias, per_channel=per_channel,
                                 symmetric=symmetric, method=method)
                side_bits = (16 * n_scale + (0 if symmetric else 8 * n_scale), 16 * n_out)
            meta_end = r.pos
            if method == "ans":  # a table here; the symbols come from the shared stream below
                lo, hi = r.byte(), r.byte()
                k = hi - lo + 1
                flag = r.byte() if version >= 4 else 0
                key = (bits, symmetric, lo, hi)
                if flag > 1 or hi < lo:
                    raise MincapError("artifact: corrupt ANS table header")
                if flag == 1 and key in tables:
                    q = tables[key]
                else:
                    q = unpack_bits(r.take((4 * k + 7) // 8), 4, k)
                    if flag == 1:
                        tables[key] = q
                pending.append((i, shape, q, n, lo))
            else:
                lay.codes = _from_symbols(read_symbols(r, method, n), bits, symmetric).reshape(shape)
            code_bits = 8 * (r.pos - meta_end)
            lay.stats = {"code_bits": code_bits, "scale_bits": side_bits[0], "bias_bits": side_bits[1]}
        lay.stats["header_bits"] = 8
        lay.stats["total_bits"] = 8 * (r.pos - start)
        layers.append(lay)
    stream = data[r.pos : end]
    ans_bits = 8 * len(stream)
    if pending:
        stream = stream + bytes(-len(stream) % 4)
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
        for i, shape, q, n, lo in pending:
            model = categorical(q)
            sym = coder.decode(model, n).astype(np.int64) + lo
            lay = layers[i]
            lay.codes = _from_symbols(sym, lay.bits, lay.symmetric).reshape(shape)
            est = float(-np.log2(table_probs(q)[sym - lo]).sum())
            lay.stats["ans_bits_est"] = round(est, 1)
    elif stream:
        raise MincapError("artifact: trailing bytes after the last layer")

    model = build(spec)
    with torch.no_grad():
        for mod, lay in zip(quant_layers(model), layers):
            mod.weight.copy_(torch.from_numpy(lay.float_weight()))
            mod.bias.copy_(torch.from_numpy(lay.float_bias()))
    model.eval()
    size = size_report(spec, layers, len(data), spec_bits, ans_bits)
    return Decoded(spec, model, layers, size)


def read(path: str | Path) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except OSError as err:
        raise MincapError(f"cannot read {p}: {err.strerror}") from None


def write(path: str | Path, data: bytes) -> Path:
    p = Path(path)
    if p.suffix != ".mincap":
        raise MincapError(f"artifact file must end in .mincap, got {p.name}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    except OSError as err:
        raise MincapError(f"cannot write {p}: {err.strerror}") from None
    return p
