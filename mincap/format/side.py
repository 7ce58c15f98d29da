"""A layer's side information: its scales and biases, beside its weight codes.

`CompactSide` holds a symmetric layer's per-channel scales as 8-bit log-scale exponents of a
float16 base and its biases as integer multiples of a float16 step; `from_float(side_bits=B)`
rounds them to B bits (exponents on a coarser grid, biases in a narrower range). Format version 5
(`mincap.format.container`) stores them packed at their widths: `packed_side` / `read_packed_side`, with
one bias width per file (`bias_width`). On the default study's chosen network (1,770 parameters)
8-bit sides packed this way save 144 of 8,304 bits, 6-bit sides 376 at the same validation
accuracy (`studies/artifacts/README.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mincap.errors import MincapError
from mincap.format.bits import Reader

__all__ = ["CompactSide", "common_shift", "pack_fields", "packed_side", "read_fields",
           "read_packed_side", "side_shift"]

# 2^(-j/32) for j = 0..31, rounded once to float32: the decoder's fixed table.
_POW = np.array([2.0 ** (-j / 32) for j in range(32)], dtype=np.float32)


@dataclass
class CompactSide:
    """Scales and biases of a symmetric per-channel layer at 8 bits each (or fewer), plus two float16.

    scale_c = float32(scale_base) * 2^(-scale_k[c] / 32)  (scale_k 0..255: 1.1% steps, 2^8 range)
    bias_c  = float32(bias_step) * bias_k[c]              (bias_k int8 in [-127, 127])
    Scales are non-negative; a channel's sign (negative batch-norm gain) lives in its codes.
    `from_float(..., side_bits=B)` with B < 8 keeps biases in +-(2^(B-1) - 1) and exponents on a
    grid of 2^side_shift(B) (format version 5 stores them at their width).
    """

    scale_base: np.float16
    scale_k: np.ndarray
    bias_step: np.float16
    bias_k: np.ndarray

    def scale(self) -> np.ndarray:
        k = self.scale_k.astype(np.int64)
        return np.ldexp(np.float32(self.scale_base) * _POW[k % 32], -(k // 32)).astype(np.float32)

    def bias(self) -> np.ndarray:
        return (np.float32(self.bias_step) * self.bias_k.astype(np.float32)).astype(np.float32)

    @classmethod
    def from_float(cls, scale: np.ndarray, bias: np.ndarray, side_bits: int = 8) -> CompactSide:
        """The nearest representable scales (must be >= 0) and biases at `side_bits` (2..8)."""
        if not 2 <= side_bits <= 8:
            raise ValueError(f"side_bits must be in 2..8, got {side_bits}")
        scale = np.asarray(scale, dtype=np.float64)
        bias = np.asarray(bias, dtype=np.float64)
        if (scale < 0).any():
            raise ValueError("compact scales must be non-negative (fold signs into the codes)")
        base = _f16_at_least(scale.max(initial=0.0))
        grid = 1 << side_shift(side_bits)
        top = 255 // grid * grid
        with np.errstate(divide="ignore"):
            k = np.round(-32 * np.log2(scale / float(base)) / grid) * grid if base > 0 else np.zeros_like(scale)
        k = np.clip(np.nan_to_num(k, nan=top, posinf=top), 0, top).astype(np.uint8)
        lim = (1 << (side_bits - 1)) - 1
        step = _f16_at_least(np.abs(bias).max(initial=0.0) / lim)
        bk = np.clip(np.round(bias / float(step)), -lim, lim) if step > 0 else np.zeros_like(bias)
        return cls(base, k, step, bk.astype(np.int8))

    @property
    def has_bias(self) -> bool:
        """False when every bias is 0 (step 0): format version 3 then stores no bias bytes."""
        return float(self.bias_step) != 0.0


def side_shift(side_bits: int) -> int:
    """Scale exponents at `side_bits` lie on a grid of 2^side_shift: 8 and 7 bits keep every
    exponent (1.1% steps), 6 bits every second (2.2%), 5 every fourth, ...; the range stays 2^8."""
    return max(0, 7 - side_bits)


def pack_fields(fields: list[tuple[np.ndarray, int]]) -> bytes:
    """Unsigned values at their widths, one bit-packed run (byte-padded once at the end)."""
    parts = [((np.asarray(v).astype(np.uint32).reshape(-1)[:, None] >> np.arange(w, dtype=np.uint32)) & 1)
             .astype(np.uint8).reshape(-1) for v, w in fields if w and np.asarray(v).size]
    return np.packbits(np.concatenate(parts), bitorder="little").tobytes() if parts else b""


def read_fields(reader: Reader, fields: list[tuple[int, int]]) -> list[np.ndarray]:
    """Read what `pack_fields` wrote for `fields` = [(count, width), ...]."""
    total = sum(n * w for n, w in fields)
    bits = np.unpackbits(np.frombuffer(reader.take((total + 7) // 8), dtype=np.uint8), bitorder="little")
    out, pos = [], 0
    for n, w in fields:
        chunk = bits[pos : pos + n * w].reshape(n, w).astype(np.int64)
        out.append((chunk << np.arange(w, dtype=np.int64)).sum(axis=1) if w else np.zeros(n, dtype=np.int64))
        pos += n * w
    return out


def _f16_at_least(x: float) -> np.float16:
    h = np.float16(x)
    if float(h) < x:
        h = np.nextafter(h, np.float16(np.inf))
    return h




def common_shift(k: np.ndarray) -> int:
    """The largest s <= 7 such that every exponent is a multiple of 2^s (0 for no exponents)."""
    nz = k[k != 0].astype(np.int64)
    if nz.size == 0:
        return 0
    s = 0
    while s < 7 and not np.any(nz & ((1 << (s + 1)) - 1)):
        s += 1
    return s


def packed_side(sd: CompactSide, per_channel: bool, n_out: int, width: int) -> bytes:
    """Version 5: [kw | shift << 4], bias step float16, then exponents >> shift at kw bits and
    bias codes + 2^(width-1) - 1 at `width` bits, one bit-packed run (the base is written before)."""
    out, fields = bytearray(), []
    if per_channel:
        k = np.asarray(sd.scale_k, dtype=np.int64).reshape(n_out)
        shift = common_shift(k)
        kw = int((k >> shift).max(initial=0)).bit_length()
        out.append(kw | shift << 4)
        fields.append((k >> shift, kw))
    out += np.asarray(sd.bias_step, dtype="<f2").tobytes()
    if sd.has_bias:
        lim = (1 << (width - 1)) - 1
        fields.append((np.asarray(sd.bias_k, dtype=np.int64).reshape(n_out) + lim, width))
    return bytes(out + pack_fields(fields))


def read_packed_side(r: Reader, per_channel: bool, n_out: int, bias_width: int) -> tuple[CompactSide, tuple]:
    """A version-5 compact side: base, [kw | shift << 4], step, then exponents and biases packed."""
    start = r.pos
    base = r.array("<f2", 1)[0]
    kw = shift = 0
    if per_channel:
        b = r.byte()
        kw, shift = b & 15, b >> 4
        if kw > 8 or shift > 7:
            raise MincapError("artifact: corrupt scale exponent width")
    step = r.array("<f2", 1)[0]
    has_bias = float(step) != 0.0
    fields = ([(n_out, kw)] if per_channel else []) + ([(n_out, bias_width)] if has_bias else [])
    vals = read_fields(r, fields)
    scale_k = vals[0] << shift if per_channel else np.zeros(1, dtype=np.int64)
    if scale_k.max(initial=0) > 255:
        raise MincapError("artifact: corrupt scale exponent")
    lim = (1 << (bias_width - 1)) - 1
    bias_k = vals[-1] - lim if has_bias else np.zeros(n_out, dtype=np.int64)
    if has_bias and vals[-1].max(initial=0) > 2 * lim:
        raise MincapError("artifact: corrupt bias")
    side = CompactSide(base, scale_k.astype(np.uint8), step, bias_k.astype(np.int8))
    scale_bits = 16 + (8 + n_out * kw if per_channel else 0)
    return side, (scale_bits, 8 * (r.pos - start) - scale_bits)
