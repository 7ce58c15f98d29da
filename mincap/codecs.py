"""The pieces a `.mincap` file is made of: the binary spec and the layer shapes it implies,
what one layer stores (`LayerCodes`, with 8-bit
scales and biases in `CompactSide`), varints, bit packing, and the four ways a layer's integer
symbols are stored (raw bit-packing, zstd, LZMA2, ANS with a stored table).

`code_options` gives, for one layer's symbols, each method's bytes and cost in bits, so
`mincap.artifact.encode` can keep the smallest; `read_symbols` reads the first three
back, and the ANS symbols of all layers share one `constriction` stream that
`mincap.artifact` writes and reads with `categorical` models built from the stored
nibble tables (`nibble_table`, `table_probs`).
"""

from __future__ import annotations

import lzma
import math
from dataclasses import dataclass, field, replace

import constriction
import numpy as np
import zstandard as zstd

from mincap.errors import MincapError
from mincap.models import ACTIVATIONS, Conv, Spec
from mincap.side import CompactSide, pack_fields, read_fields, side_shift

__all__ = ["CODE_METHODS", "LZMA_FILTERS", "SEPARABLE", "CompactSide", "LayerCodes", "Reader", "best_method", "categorical", "code_options", "nibble_table", "layer_shapes", "pack_bits", "pack_fields", "read_fields", "read_spec", "read_symbols", "share_tables", "side_shift", "size_report", "spec_bytes",
           "table_probs", "unpack_bits", "varint"]

SEPARABLE = 1 << 6  # spec flag (format version 2): a varint bitmask of the separable conv blocks follows
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 16}]


@dataclass
class LayerCodes:
    """One conv/linear layer as stored: codes + scales + zero points + bias, or float32 weights.

    `bits == 0` means float32 weights in `weight` (reference models). Otherwise
    `codes` (int64, the weight's shape) with float16 `scale` and uint8 `zero_point`
    (one per output channel, or one), `bias` float16 (one per output channel).
    """

    bits: int
    codes: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight: np.ndarray | None = None
    per_channel: bool = True
    symmetric: bool = True
    method: str = ""  # filled by encode / decode
    stats: dict = field(default_factory=dict)
    side: CompactSide | None = None  # symmetric per-channel layers: 8-bit scales and biases

    @property
    def compact(self) -> bool:
        # Symmetric per-channel layers always; a symmetric per-tensor one when it carries a
        # `CompactSide` (format version 3: one scale, 8-bit biases).
        return self.bits > 0 and self.symmetric and (self.per_channel or self.side is not None)

    def float_scale(self) -> np.ndarray:
        return self.side.scale() if self.compact else self.scale.astype(np.float32)

    def float_weight(self) -> np.ndarray:
        """The float32 weight the decoder loads (the dequantization rule of the format)."""
        if self.bits == 0:
            return self.weight.astype(np.float32)
        shape = (-1,) + (1,) * (self.codes.ndim - 1)
        c = self.codes.astype(np.float32)
        if not self.symmetric:
            c = c - self.zero_point.astype(np.float32).reshape(shape)
        return c * self.float_scale().reshape(shape)

    def float_bias(self) -> np.ndarray:
        return self.side.bias() if self.compact else self.bias.astype(np.float32)


def varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise MincapError("artifact: truncated file")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise MincapError("artifact: corrupt varint")

    def array(self, dtype, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count), dtype=dt).copy()


def pack_bits(values: np.ndarray, width: int) -> bytes:
    if width == 0 or values.size == 0:
        return b""
    bits = ((values.astype(np.uint32)[:, None] >> np.arange(width, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, width: int, n: int) -> np.ndarray:
    if width == 0:
        return np.zeros(n, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: n * width]
    bits = bits.reshape(n, width).astype(np.int64)
    return (bits << np.arange(width, dtype=np.int64)).sum(axis=1)


def zstd_compress(b: bytes) -> bytes:
    params = zstd.ZstdCompressionParameters.from_level(
        19, format=zstd.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False,
        write_dict_id=False,
    )
    return zstd.ZstdCompressor(compression_params=params).compress(b)


def zstd_decompress(b: bytes, n: int) -> bytes:
    return zstd.ZstdDecompressor(format=zstd.FORMAT_ZSTD1_MAGICLESS).decompress(b, max_output_size=max(n, 1))


def nibble_table(sym: np.ndarray, k: int) -> np.ndarray:
    """Quantized probability table: one value 0..15 per symbol (0 = unused)."""
    counts = np.bincount(sym, minlength=k).astype(np.float64)
    q = np.zeros(k, dtype=np.int64)
    used = counts > 0
    q[used] = np.clip(np.round(2 * np.log2(counts[used] / counts.max())) + 15, 1, 15)
    return q


def table_probs(q: np.ndarray) -> np.ndarray:
    p = np.where(q > 0, np.exp2((q.astype(np.float64) - 15) / 2), 0.0)
    return p / p.sum()


def categorical(q: np.ndarray):
    return constriction.stream.model.Categorical(table_probs(q), perfect=False)



def code_options(sym: np.ndarray) -> dict[str, tuple[bytes, float]]:
    """Per method: the bytes this layer's section carries, and the cost in bits (ans: estimated)."""
    lo, hi = (int(sym.min()), int(sym.max())) if sym.size else (0, 0)
    rel = sym - lo
    width = (hi - lo).bit_length()
    raw = bytes([lo, hi]) + pack_bits(rel, width)
    opts = {"raw": (raw, 8.0 * len(raw))}
    as_bytes = sym.astype(np.uint8).tobytes()
    z = zstd_compress(as_bytes)
    opts["zstd"] = (varint(len(z)) + z, 8.0 * (len(z) + len(varint(len(z)))))
    lz = lzma.compress(as_bytes, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    opts["lzma"] = (varint(len(lz)) + lz, 8.0 * (len(lz) + len(varint(len(lz)))))
    if hi > lo:
        q = nibble_table(rel, hi - lo + 1)
        table = pack_bits(q, 4)
        p = table_probs(q)
        est = float(-np.log2(p[rel]).sum())
        head = bytes([lo, hi]) + table
        opts["ans"] = (head, 8.0 * len(head) + est)
    return opts




CODE_METHODS = ("raw", "zstd", "lzma", "ans")  # a layer's code methods, by the index its layer byte stores


def best_method(opts: dict[str, tuple[bytes, float]]) -> str:
    """The cheapest of `code_options`, ties to the earlier method."""
    return min(opts, key=lambda m: (opts[m][1], CODE_METHODS.index(m)))


def share_tables(layers: list[tuple[int, bool, np.ndarray, dict] | None]) -> dict[int, tuple[tuple, np.ndarray]]:
    """Layers (by index) to code with one ANS table per (width, signedness): {i: (key, table)}.

    `layers`: (bits, symmetric, symbols, their `code_options`) per layer, None for a float32 one. Per group of one width
    and signedness: one nibble table over their pooled symbols (range [lo, hi] of the pool). A layer
    joins when that table codes it in fewer bits (its 3 bytes of head included) than its own best
    method; the group shares when the joiners' savings exceed the table's bytes. All groups
    together must also pay the flag byte version 4 adds to each own-table ANS layer. Empty: the
    file stays at its older version, byte for byte.
    """
    groups: dict[tuple, list] = {}
    best = {}  # layer index: (bits of its own best method, that method)
    for i, lay in enumerate(layers):
        if lay is not None and lay[2].size:
            groups.setdefault(lay[:2], []).append((i, lay[2]))
            opts = lay[3]
            m = best_method(opts)
            best[i] = (opts[m][1], m)
    shared: dict[int, tuple[tuple, np.ndarray]] = {}
    saved_all = 0.0
    for (bits, symmetric), members in groups.items():
        lo = min(int(sym.min()) for _, sym in members)
        hi = max(int(sym.max()) for _, sym in members)
        if hi == lo:
            continue
        q = nibble_table(np.concatenate([sym for _, sym in members]) - lo, hi - lo + 1)
        p = table_probs(q)
        joiners, saved = [], -8.0 * len(pack_bits(q, 4))
        for i, sym in members:
            cost = 24 + float(-np.log2(p[sym - lo]).sum())
            if cost < best[i][0]:
                joiners.append(i)
                saved += best[i][0] - cost
        if saved > 0:
            shared.update({i: ((bits, symmetric, lo, hi), q) for i in joiners})
            saved_all += saved
    own_ans = sum(1 for i, (_, m) in best.items() if m == "ans" and i not in shared)
    return shared if shared and saved_all > 8 * own_ans else {}


def read_symbols(r: Reader, method: str, n: int) -> np.ndarray:
    """`n` symbols (int64) of a layer stored with `method` "raw", "zstd" or "lzma"."""
    if method == "raw":
        lo, hi = r.byte(), r.byte()
        width = (hi - lo).bit_length()
        return unpack_bits(r.take((n * width + 7) // 8), width, n) + lo
    blob = r.take(r.varint())
    raw = zstd_decompress(blob, n) if method == "zstd" else lzma.decompress(
        blob, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    if len(raw) != n:
        raise MincapError("artifact: corrupt layer codes")
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)


def spec_bytes(spec: Spec) -> bytes:
    """The binary spec (batch norm folded): flags, conv blocks, hidden widths, shape unless MNIST's."""
    if spec.batch_norm:
        raise ValueError("artifact: fold batch norm before encoding")
    default_shape = tuple(spec.in_shape) == (1, 28, 28) and spec.n_classes == 10
    separable = sum(1 << i for i, c in enumerate(spec.convs) if c.separable)
    flags = (
        (spec.family == "mlp")
        | (spec.head == "gap") << 1
        | ACTIVATIONS.index(spec.activation) << 2
        | default_shape << 5
        | (SEPARABLE if separable else 0)
    )
    out = bytearray([flags])
    out += varint(len(spec.convs))
    for c in spec.convs:
        if max(c.kernel, c.pad, c.stride, c.pool) > 15:
            raise ValueError("artifact: conv kernel/pad/stride/pool must be < 16")
        out += varint(c.channels) + bytes([c.kernel << 4 | c.pad, c.stride << 4 | c.pool])
    if separable:
        out += varint(separable)
    out += varint(len(spec.hidden))
    for h in spec.hidden:
        out += varint(h)
    if not default_shape:
        for v in (*spec.in_shape, spec.n_classes):
            out += varint(v)
    return bytes(out)


def read_spec(r: Reader, version: int) -> Spec:
    flags = r.byte()
    act = (flags >> 2) & 7
    if act >= len(ACTIVATIONS) or flags >> 7 or (flags & SEPARABLE and version < 2):
        raise MincapError("artifact: corrupt spec")
    convs = []
    for _ in range(r.varint()):
        ch = r.varint()
        kp, sp = r.byte(), r.byte()
        convs.append(Conv(ch, kp >> 4, sp >> 4, sp & 15, kp & 15))
    if flags & SEPARABLE:
        mask = r.varint()
        if mask >> len(convs) or not mask:
            raise MincapError("artifact: corrupt spec")
        convs = [replace(c, separable=bool(mask >> i & 1)) for i, c in enumerate(convs)]
    hidden = tuple(r.varint() for _ in range(r.varint()))
    if flags >> 5 & 1:
        in_shape, n_classes = (1, 28, 28), 10
    else:
        c, h, w, n_classes = (r.varint() for _ in range(4))
        in_shape = (c, h, w)
    return Spec(
        family="mlp" if flags & 1 else "cnn",
        convs=tuple(convs),
        hidden=hidden,
        activation=ACTIVATIONS[act],
        batch_norm=False,
        head="gap" if flags >> 1 & 1 else "flatten",
        in_shape=in_shape,
        n_classes=n_classes,
    )


def layer_shapes(spec: Spec) -> list[tuple[tuple[int, ...], int]]:
    """(weight shape, out channels) of each conv/linear layer of `spec`, in order."""
    shapes = []
    c = spec.in_shape[0]
    for cv in spec.convs:
        if cv.separable:  # depthwise, then pointwise (`mincap.models.build`)
            shapes.append(((c, 1, cv.kernel, cv.kernel), c))
            shapes.append(((cv.channels, c, 1, 1), cv.channels))
        else:
            shapes.append(((cv.channels, c, cv.kernel, cv.kernel), cv.channels))
        c = cv.channels
    if spec.head == "gap":
        width = spec.feature_shape()[0]
    else:
        fc, fh, fw = spec.feature_shape()
        width = fc * fh * fw
    for h in (*spec.hidden, spec.n_classes):
        shapes.append(((h, width), h))
        width = h
    return shapes


def size_report(spec: Spec, layers: list[LayerCodes], n_bytes: int, spec_bits: int, ans_bits: int) -> dict:
    """The size table of a decoded file: totals, then one row per conv/linear layer."""
    rows = []
    n_params = n_nonzero = nominal = 0
    for i, (lay, (shape, n_out)) in enumerate(zip(layers, layer_shapes(spec))):
        n = math.prod(shape)
        # Per layer, weights and biases are counted apart (n_nonzero <= n_weights); the totals
        # count both, like n_params and `mincap.models.count_params`.
        if lay.bits == 0:
            nz, nz_bias = int(np.count_nonzero(lay.weight)), int(np.count_nonzero(lay.bias))
            nom = 32 * (n + n_out)
        else:
            nz, nz_bias = int(np.count_nonzero(lay.float_weight())), int(np.count_nonzero(lay.float_bias()))
            nom = lay.bits * n + lay.stats["scale_bits"] + lay.stats["bias_bits"]
        n_params += n + n_out
        n_nonzero += nz + nz_bias
        nominal += nom
        rows.append({
            "layer": i,
            "kind": "conv" if len(shape) == 4 else "linear",
            "shape": list(shape),
            "bits": lay.bits or 32,
            "n_weights": n,
            "n_nonzero": nz,
            "n_biases": n_out,
            "n_nonzero_biases": nz_bias,
            "method": lay.method,
            "nominal_bits": nom,
            **lay.stats,
        })
    return {
        "artifact_bits": 8 * n_bytes,
        "artifact_bytes": n_bytes,
        "n_params": n_params,
        "n_nonzero": n_nonzero,
        "nominal_bits": nominal,
        "header_bits": 24 + spec_bits,
        "ans_stream_bits": ans_bits,
        "checksum_bits": 32,
        "layers": rows,
    }
