"""The pieces a `.mincap` file is made of: the binary spec and the layer shapes it implies,
what one layer stores (`LayerCodes`, with 8-bit
scales and biases in `CompactSide`), varints, bit packing, and the four ways a layer's integer
symbols are stored (raw bit-packing, zstd, LZMA2, ANS with a stored table).

`code_options` gives, for one layer's symbols, each method's bytes and cost in bits, so
`mincap.format.container.encode` can keep the smallest; `read_symbols` reads the first three
back, and the ANS symbols of all layers share one `constriction` stream that
`mincap.format.container` writes and reads with `categorical` models built from the stored
nibble tables (`nibble_table`, `table_probs`).
"""

from __future__ import annotations

import lzma
import math
from dataclasses import dataclass, field

import constriction
import numpy as np
import zstandard as zstd

from mincap.errors import MincapError
from mincap.format.bits import Reader, pack_bits, unpack_bits, varint
from mincap.format.side import CompactSide
from mincap.format.spec import layer_shapes
from mincap.nets.models import Spec

__all__ = ["best_method", "bias_width", "categorical", "CODE_METHODS", "code_options", "LayerCodes", "LZMA_FILTERS", "nibble_table", "read_symbols", "share_tables", "size_report", "table_probs"]

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








def size_report(spec: Spec, layers: list[LayerCodes], n_bytes: int, spec_bits: int, ans_bits: int) -> dict:
    """The size table of a decoded file: totals, then one row per conv/linear layer."""
    rows = []
    n_params = n_nonzero = nominal = 0
    for i, (lay, (shape, n_out)) in enumerate(zip(layers, layer_shapes(spec))):
        n = math.prod(shape)
        # Per layer, weights and biases are counted apart (n_nonzero <= n_weights); the totals
        # count both, like n_params and `mincap.nets.models.count_params`.
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


def bias_width(layers: list[LayerCodes]) -> int | None:
    """The one bias width (2..8 bits) of a version-5 file, or None when no layer is compact or a
    bias code needs 9 bits (-128, outside the symmetric int8 range)."""
    compact = [lay for lay in layers if lay.bits and lay.compact]
    if not compact:
        return None
    m = max((int(np.abs(lay.side.bias_k.astype(np.int64)).max(initial=0)) for lay in compact if lay.side.has_bias),
            default=0)
    w = max(2, m.bit_length() + 1)
    return w if w <= 8 else None
