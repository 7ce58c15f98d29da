"""Reference decoder of `.mincap` files, written from docs/format.md alone.

It reads a file (format versions 1 to 5), checks its magic, version and CRC-32, rebuilds the
network's weights and its forward pass in numpy, and classifies the official MNIST test images:

    python reference/decode.py FILE.mincap --data DIR [--limit N] [--logits OUT.npy]

DIR holds MNIST/raw/t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. It prints one
JSON object: artifact_bits (8 x the file's length), test_acc, n_test, n_correct, n_params,
version, and decoder_bytes (the length of this file: the fixed decoder of the MDL code). A bad
file or missing data is one line on stderr and exit code 2.

It needs numpy, `constriction` for files with ANS-coded layers and `zstandard` for files with
zstd-coded layers; it imports neither torch nor mincap. As a module: `decode(data)` gives
(spec, layers) and `forward(spec, layers, images_uint8)` the float32 logits.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import math
import sys
import zlib
from pathlib import Path

import numpy as np

MAGIC = b"MC"
NEWEST = 5
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "gelu", "silu", "tanh", "hardtanh")
METHODS = ("raw", "zstd", "lzma", "ans")
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}]
# 2^(-j/32) for j = 0..31, computed in float64 and rounded once to float32.
POW = np.array([2.0 ** (-j / 32) for j in range(32)], dtype=np.float32)


class FormatError(Exception):
    """A file this decoder refuses (the message is the one line it prints)."""


class Reader:
    """Bytes read in order from `pos` up to `end`; reading past `end` is a truncated file."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise FormatError("truncated file")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        """LEB128: 7 bits a byte, least significant group first, high bit set = more follow."""
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise FormatError("corrupt varint")

    def array(self, dtype: str, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(dt.itemsize * count), dtype=dt).copy()

    def packed(self, fields: list[tuple[int, int]]) -> list[np.ndarray]:
        """Unsigned fields [(count, width), ...] from one bit run, padded to a byte at its end.

        Bit i of the run is bit (i % 8) of byte i // 8 (least significant first); each value
        takes `width` bits, its least significant bit first.
        """
        total = sum(n * w for n, w in fields)
        bits = np.unpackbits(np.frombuffer(self.take((total + 7) // 8), np.uint8), bitorder="little")
        out, pos = [], 0
        for n, w in fields:
            chunk = bits[pos : pos + n * w].reshape(n, w).astype(np.int64)
            out.append((chunk << np.arange(w, dtype=np.int64)).sum(axis=1))
            pos += n * w
        return out


# ---------------------------------------------------------------------------- spec


def read_spec(r: Reader, version: int) -> dict:
    """The architecture: flags byte, conv blocks, [separable mask], hidden widths, [shape]."""
    flags = r.byte()
    if flags >> 7 or (flags >> 2 & 7) >= len(ACTIVATIONS) or (flags >> 6 & 1 and version < 2):
        raise FormatError("corrupt spec")
    convs = []
    for _ in range(r.varint()):
        channels = r.varint()
        kernel_pad, stride_pool = r.byte(), r.byte()
        convs.append({"channels": channels, "kernel": kernel_pad >> 4, "pad": kernel_pad & 15,
                      "stride": stride_pool >> 4, "pool": stride_pool & 15, "separable": False})
    if flags >> 6 & 1:
        mask = r.varint()
        if not mask or mask >> len(convs):
            raise FormatError("corrupt spec")
        for i, c in enumerate(convs):
            c["separable"] = bool(mask >> i & 1)
    hidden = [r.varint() for _ in range(r.varint())]
    if flags >> 5 & 1:
        in_shape, n_classes = (1, 28, 28), 10
    else:
        c, h, w, n_classes = (r.varint() for _ in range(4))
        in_shape = (c, h, w)
    spec = {"mlp": bool(flags & 1), "gap": bool(flags >> 1 & 1),
            "activation": ACTIVATIONS[flags >> 2 & 7], "convs": convs, "hidden": hidden,
            "in_shape": in_shape, "n_classes": n_classes}
    if spec["mlp"] and convs:
        raise FormatError("corrupt spec (an mlp has no conv blocks)")
    return spec


def layer_shapes(spec: dict) -> list[tuple[tuple[int, ...], int]]:
    """(weight shape, output channels) of each conv and linear layer, in file order."""
    shapes = []
    c, h, w = spec["in_shape"]
    for cv in spec["convs"]:
        k, s, p = cv["kernel"], cv["stride"], cv["pad"]
        if min(k, s, cv["pool"], cv["channels"]) < 1:
            raise FormatError("corrupt spec (zero kernel, stride, pool or channels)")
        if cv["separable"]:
            shapes += [((c, 1, k, k), c), ((cv["channels"], c, 1, 1), cv["channels"])]
        else:
            shapes.append(((cv["channels"], c, k, k), cv["channels"]))
        c = cv["channels"]
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        h, w = h // cv["pool"], w // cv["pool"]
        if h < 1 or w < 1:
            raise FormatError("corrupt spec (the conv blocks leave no pixels)")
    width = c if spec["gap"] else c * h * w
    for n in (*spec["hidden"], spec["n_classes"]):
        if n < 1:
            raise FormatError("corrupt spec (a layer of width 0)")
        shapes.append(((n, width), n))
        width = n
    return shapes


# ---------------------------------------------------------------------------- layers


def compact_scale(base: np.ndarray, k: np.ndarray) -> np.ndarray:
    """float32(base) * 2^(-k/32) per channel, as POW[k % 32] times 2^-(k // 32)."""
    k = k.astype(np.int64)
    return np.ldexp(np.float32(base) * POW[k % 32], -(k // 32)).astype(np.float32)


def read_side(r: Reader, version: int, width: int, per_channel: bool, symmetric: bool,
              n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A quantized layer's (scale, zero point, bias) as float32; one scale per channel or one."""
    n_scale = n_out if per_channel else 1
    zero = np.zeros(n_scale, dtype=np.float32)
    if symmetric and version >= 5:  # packed compact side
        base = r.array("<f2", 1)[0]
        kw = shift = 0
        if per_channel:
            b = r.byte()
            kw, shift = b & 15, b >> 4
            if kw > 8 or shift > 7:
                raise FormatError("corrupt scale exponent width")
        step = r.array("<f2", 1)[0]
        has_bias = float(step) != 0.0
        fields = ([(n_out, kw)] if per_channel else []) + ([(n_out, width)] if has_bias else [])
        vals = r.packed(fields)
        k = vals[0] << shift if per_channel else np.zeros(1, dtype=np.int64)
        lim = (1 << (width - 1)) - 1
        bias_k = vals[-1] - lim if has_bias else np.zeros(n_out, dtype=np.int64)
        if k.max(initial=0) > 255 or (has_bias and vals[-1].max(initial=0) > 2 * lim):
            raise FormatError("corrupt packed side")
    elif symmetric and (per_channel or version >= 3):  # compact side, one byte a value
        base = r.array("<f2", 1)[0]
        k = r.array("u1", n_out) if per_channel else np.zeros(1, dtype=np.int64)
        step = r.array("<f2", 1)[0]
        has_bias = version < 3 or float(step) != 0.0
        bias_k = r.array("i1", n_out) if has_bias else np.zeros(n_out, dtype=np.int64)
    else:  # float16 scales, uint8 zero points (asymmetric only), float16 biases
        scale = r.array("<f2", n_scale).astype(np.float32)
        zp = zero if symmetric else r.array("u1", n_scale).astype(np.float32)
        return scale, zp, r.array("<f2", n_out).astype(np.float32)
    bias = np.float32(step) * bias_k.astype(np.float32)
    return compact_scale(base, k), zero, bias.astype(np.float32)


def read_symbols(r: Reader, method: str, n: int) -> np.ndarray:
    """`n` symbols of a layer coded raw, zstd or lzma."""
    if method == "raw":
        lo, hi = r.byte(), r.byte()
        if hi < lo:
            raise FormatError("corrupt raw codes")
        return r.packed([(n, (hi - lo).bit_length())])[0] + lo
    blob = r.take(r.varint())
    if method == "zstd":
        import zstandard  # only files with zstd-coded layers need it

        raw = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompress(
            blob, max_output_size=max(n, 1))
    else:
        raw = lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    if len(raw) != n:
        raise FormatError("corrupt layer codes")
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)


def table_probs(q: np.ndarray) -> np.ndarray:
    """The ANS model's float probabilities from the nibble table (q = 0: probability 0)."""
    p = np.where(q > 0, np.exp2((q.astype(np.float64) - 15) / 2), 0.0)
    return p / p.sum()


def to_codes(sym: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Symbols (0-based) to signed weight codes."""
    if symmetric and bits == 1:
        return 2 * sym - 1
    return sym - ((1 << (bits - 1)) - 1) if symmetric else sym


def decode(data: bytes) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]]]:
    """The spec and each layer's (float32 weight, float32 bias) of a `.mincap` file."""
    if len(data) < 3 or data[:2] != MAGIC:
        raise FormatError("not a .mincap file (wrong magic)")
    version = data[2]
    if not 1 <= version <= NEWEST:
        raise FormatError(f"format version {version} is not one of 1 to {NEWEST}")
    if len(data) < 7:
        raise FormatError("truncated file")
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise FormatError("checksum mismatch (corrupted or truncated file)")
    try:
        return _decode_body(data, version)
    except FormatError:
        raise
    except Exception as err:  # a body that passed the CRC but does not parse
        raise FormatError(f"corrupt file ({type(err).__name__}: {err})") from None


def _decode_body(data: bytes, version: int) -> tuple[dict, list]:
    r = Reader(data, 3, len(data) - 4)
    spec = read_spec(r, version)
    width = r.byte() if version >= 5 else 8
    if not 2 <= width <= 8:
        raise FormatError("corrupt bias width")
    layers, pending, tables = [], [], {}
    for shape, n_out in layer_shapes(spec):
        n = math.prod(shape)
        head = r.byte()
        bits = head & 15
        if bits == 0:
            w = r.array("<f4", n).reshape(shape)
            layers.append({"weight": w, "bias": r.array("<f4", n_out)})
            continue
        if bits > 8:
            raise FormatError("corrupt layer header")
        per_channel, symmetric, method = bool(head >> 4 & 1), bool(head >> 5 & 1), METHODS[head >> 6]
        scale, zp, bias = read_side(r, version, width, per_channel, symmetric, n_out)
        layer = {"shape": shape, "bits": bits, "symmetric": symmetric, "scale": scale, "zp": zp,
                 "bias": bias}
        if method == "ans":  # a table here, the symbols from the shared stream after the layers
            lo, hi = r.byte(), r.byte()
            flag = r.byte() if version >= 4 else 0
            key = (bits, symmetric, lo, hi)
            if flag > 1 or hi < lo:
                raise FormatError("corrupt ANS table header")
            if flag == 1 and key in tables:
                q = tables[key]
            else:
                q = r.packed([(hi - lo + 1, 4)])[0]
                if flag == 1:
                    tables[key] = q
            pending.append((layer, q, lo, n))
        else:
            layer["symbols"] = read_symbols(r, method, n)
        layers.append(layer)
    stream = data[r.pos : len(data) - 4]
    if pending:
        import constriction  # only files with ANS-coded layers need it

        words = np.frombuffer(stream + bytes(-len(stream) % 4), dtype="<u4").astype(np.uint32)
        coder = constriction.stream.stack.AnsCoder(words)
        for layer, q, lo, n in pending:  # in file order: the writer pushed them last first
            model = constriction.stream.model.Categorical(table_probs(q), perfect=False)
            layer["symbols"] = coder.decode(model, n).astype(np.int64) + lo
    elif stream:
        raise FormatError("trailing bytes after the last layer")
    return spec, [(lay["weight"] if "weight" in lay else dequantize(lay), lay["bias"]) for lay in layers]


def dequantize(layer: dict) -> np.ndarray:
    """The float32 weight: (code - zero point) * scale, per output channel (the first axis)."""
    shape = layer["shape"]
    col = (-1,) + (1,) * (len(shape) - 1)
    codes = to_codes(layer["symbols"], layer["bits"], layer["symmetric"]).astype(np.float32)
    return (codes.reshape(shape) - layer["zp"].reshape(col)) * layer["scale"].reshape(col)


# ---------------------------------------------------------------------------- forward pass


def erf(x: np.ndarray) -> np.ndarray:
    """erf to about 1.2e-7 relative (Numerical Recipes' erfc by Chebyshev fit), in float64."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    c = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
         0.09678418, 0.37409196, 1.00002368, -1.26551223)
    poly = np.zeros_like(t)
    for a in c:
        poly = poly * t + a
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def activate(x: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "relu6":
        return np.clip(x, 0, 6)
    if name == "leaky_relu":
        return np.where(x > 0, x, np.float32(0.01) * x)
    if name == "gelu":
        x64 = x.astype(np.float64)
        return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)
    if name == "silu":
        with np.errstate(over="ignore"):
            return x / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    return np.clip(x, -1, 1)  # hardtanh


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int,
           depthwise: bool) -> np.ndarray:
    """Cross-correlation of x (N, C, H, W) with w (O, C or 1, k, k), zero padding, plus bias."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, ho, wo, w.shape[0]), dtype=np.float32)  # channels last while summing
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            patch = patch.transpose(0, 2, 3, 1)
            out += patch * w[:, 0, i, j] if depthwise else patch @ w[:, :, i, j].T
    return (out + b).transpose(0, 3, 1, 2)


def forward(spec: dict, layers: list[tuple[np.ndarray, np.ndarray]], images: np.ndarray) -> np.ndarray:
    """float32 logits of uint8 images (N, C, H, W): pixels / 255, the conv blocks, the head."""
    x = images.astype(np.float32) / np.float32(255)
    it = iter(layers)
    act = spec["activation"]
    for cv in spec["convs"]:
        if cv["separable"]:  # depthwise k x k, then pointwise 1 x 1, no activation between
            w, b = next(it)
            x = conv2d(x, w, b, cv["stride"], cv["pad"], depthwise=True)
            w, b = next(it)
            x = conv2d(x, w, b, 1, 0, depthwise=False)
        else:
            w, b = next(it)
            x = conv2d(x, w, b, cv["stride"], cv["pad"], depthwise=False)
        x = activate(x, act)
        p = cv["pool"]
        if p > 1:  # max pool, window p, stride p, no padding, the remainder dropped
            n, c, h, wd = x.shape
            x = x[:, :, : h // p * p, : wd // p * p].reshape(n, c, h // p, p, wd // p, p).max(axis=(3, 5))
    x = x.mean(axis=(2, 3), dtype=np.float32) if spec["gap"] else x.reshape(len(x), -1)
    for _ in spec["hidden"]:
        w, b = next(it)
        x = activate(x @ w.T + b, act)
    w, b = next(it)
    return (x @ w.T + b).astype(np.float32)


# ---------------------------------------------------------------------------- MNIST and the CLI


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array of unsigned bytes from its .gz file (magic 0x801 labels, 0x803 images)."""
    raw = gzip.decompress(path.read_bytes())
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        raise FormatError(f"{path}: not an IDX file of this kind")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise FormatError(f"{path}: truncated")
    return body.reshape(dims)


def mnist_test(root: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "MNIST" / "raw"
    x = read_idx(raw / "t10k-images-idx3-ubyte.gz", 0x803)[:, None]
    y = read_idx(raw / "t10k-labels-idx1-ubyte.gz", 0x801).astype(np.int64)
    if len(x) != len(y):
        raise FormatError(f"{raw}: {len(x)} images but {len(y)} labels")
    return x, y


def run(args: argparse.Namespace) -> dict:
    data = Path(args.file).read_bytes()
    spec, layers = decode(data)
    if tuple(spec["in_shape"]) != (1, 28, 28) or spec["n_classes"] != 10:
        raise FormatError(f"the network takes {spec['in_shape']} inputs and {spec['n_classes']} "
                          f"classes, not MNIST's (1, 28, 28) and 10")
    x, y = mnist_test(Path(args.data))
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    logits = np.concatenate([forward(spec, layers, x[i : i + 1000]) for i in range(0, len(x), 1000)]
                            or [np.zeros((0, 10), np.float32)])
    if args.logits:
        np.save(args.logits, logits)
    correct = int((logits.argmax(axis=1) == y).sum())
    return {"file": args.file, "version": data[2], "artifact_bits": 8 * len(data),
            "n_params": sum(w.size + b.size for w, b in layers), "n_test": len(y),
            "n_correct": correct, "test_acc": correct / len(y) if len(y) else float("nan"),
            "decoder_bytes": Path(__file__).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Decode a .mincap file and classify MNIST's test set.")
    ap.add_argument("file", help="the .mincap file")
    ap.add_argument("--data", required=True, help="folder holding MNIST/raw/t10k-*.gz")
    ap.add_argument("--limit", type=int, help="only the first N test images")
    ap.add_argument("--logits", help="write the logits (float32, N x classes) to this .npy file")
    args = ap.parse_args(argv)
    try:
        out = run(args)
    except (FormatError, OSError, EOFError, zlib.error) as err:
        msg = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.strerror else err
        print(f"decode.py: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
