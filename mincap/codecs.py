"""The byte-level codes of a `.mincap` file: varints, bit packing, and the four ways a
layer's integer symbols are stored (raw bit-packing, zstd, LZMA2, ANS with a stored table).

`code_options` gives, for one layer's symbols, each method's bytes and cost in bits, so
`mincap.artifact.encode` can keep the smallest; `read_symbols` reads the first three
back, and the ANS symbols of all layers share one `constriction` stream that
`mincap.artifact` writes and reads with `categorical` models built from the stored
nibble tables (`nibble_table`, `table_probs`).
"""

from __future__ import annotations

import lzma

import constriction
import numpy as np
import zstandard as zstd

from mincap.errors import MincapError

__all__ = ["LZMA_FILTERS", "Reader", "categorical", "code_options", "nibble_table", "pack_bits", "read_symbols",
           "table_probs", "unpack_bits", "varint"]

LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 16}]


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
