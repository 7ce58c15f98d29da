"""The reference decoder (`reference/decode.py`, written from docs/format.md) against mincap's own.

- Every committed MNIST `.mincap` file: the reference decoder runs in a subprocess where importing
  torch or mincap raises ImportError. Its logits on the first 2,000 MNIST test images (all 10,000
  for sep16-99) match the network `mincap.format.container.decode` builds within 1e-4 and it
  classifies as many correctly; on all 10,000 its accuracy equals `mincap verify`'s (the same
  `holdout.final_test_accuracy`) and the `mincap verify --json` record committed beside the file.
- Files mincap writes for the branches no committed file takes (float32 and asymmetric layers,
  hand-built symmetric per-layer layers, zstd, lzma, own ANS tables, shared tables at version 4,
  per-layer packed sides, an MLP, strides, padding, a flatten head, every activation): the same
  weights bit for bit, and the same logits.
- The ANS stream decoded by docs/format.md's description (plain Python, no constriction) gives
  the same weights as constriction does.
- The worked example's hex dump in docs/format.md is the committed file's bytes.
- Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import bisect
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from mincap.evaluation import holdout
from mincap.format import container
from mincap.format.codes import LayerCodes
from mincap.format.side import CompactSide
from mincap.format.spec import layer_shapes
from mincap.nets.models import ACTIVATIONS, Conv, Spec
from mincap.nets.quant import code_range

REPO = Path(__file__).resolve().parents[2]
DECODER = REPO / "reference" / "decode.py"
EXAMPLE = "studies/artifacts/mnist-99-side6.mincap"  # the worked example of docs/format.md
FULL = "studies/artifacts/sep16-99.mincap"  # checked on all 10,000 test images; the others on 2,000

# Runs a script (argv[1]) with its arguments, importing torch or mincap raising ImportError.
BLOCKED = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "mincap"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _load_reference():
    spec = importlib.util.spec_from_file_location("mincap_reference_decode", DECODER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()


def _blocked(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", BLOCKED, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _record(path: Path) -> dict | None:
    """The `mincap verify --json` record committed beside a file, if any."""
    rec = path.with_name(path.stem + ".verify.json")
    return json.loads(rec.read_text()) if rec.is_file() else None


def _committed_mnist() -> list[str]:
    """Committed .mincap files of MNIST networks: MNIST's input shape and classes, and a verify
    record (when there is one) that names MNIST."""
    out = subprocess.run(["git", "ls-files", "*.mincap"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    files = []
    for name in out:
        path = REPO / name
        spec, _ = ref.decode(path.read_bytes())
        rec = _record(path)
        mnist_shape = tuple(spec["in_shape"]) == (1, 28, 28) and spec["n_classes"] == 10
        if mnist_shape and (rec is None or rec.get("dataset") == "mnist"):
            files.append(name)
    return files


COMMITTED = _committed_mnist()


@pytest.fixture(scope="module")
def mnist_test(mnist_root):
    """MNIST's test images and labels, through mincap's one door to the test set."""
    return holdout.test_arrays("mnist", mnist_root)


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x).float().div_(255.0)).numpy()


def test_the_blocker_blocks(tmp_path):
    script = tmp_path / "imports.py"
    script.write_text("import numpy\nimport torch\n")
    res = _blocked(script)
    assert res.returncode != 0 and "torch is blocked" in res.stderr
    script.write_text("import mincap.format.container\n")
    res = _blocked(script)
    assert res.returncode != 0 and "mincap is blocked" in res.stderr


def test_the_committed_mnist_files_are_found():
    assert FULL in COMMITTED and EXAMPLE in COMMITTED


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_file_decodes_without_torch_or_mincap(name, mnist_root, mnist_test, tmp_path):
    path = REPO / name
    n = 10_000 if name == FULL else 2_000
    logits_file = tmp_path / "logits.npy"
    res = _blocked(DECODER, path, "--data", mnist_root, "--limit", n, "--logits", logits_file)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    x, y = mnist_test[0][:n], mnist_test[1][:n]
    dec = container.decode(path.read_bytes())
    mine, theirs = np.load(logits_file), _torch_logits(dec.model, x)
    assert mine.shape == theirs.shape == (n, 10)
    assert np.abs(mine - theirs).max() <= 1e-4
    n_correct = int((theirs.argmax(1) == y).sum())
    assert (out["n_test"], out["n_correct"]) == (n, n_correct)
    assert out["artifact_bits"] == 8 * path.stat().st_size == dec.size["artifact_bits"]
    assert out["n_params"] == dec.size["n_params"]
    assert out["decoder_bytes"] == DECODER.stat().st_size
    rec = _record(path)
    if rec is not None:
        assert out["artifact_bits"] == rec["artifact_bits"]
    if n == 10_000:  # `mincap verify`'s test accuracy, now and as recorded (a float32 mean)
        verify_acc, _ = holdout.final_test_accuracy(dec.model, "mnist", root=str(mnist_root))
        assert out["test_acc"] == pytest.approx(verify_acc, abs=1e-6)
        if rec is not None:
            assert out["test_acc"] == pytest.approx(rec["test_acc"], abs=1e-6)


# ---------------------------------------------------------------------------- files for every branch


def _compact(rng, bits, shape, n_out, *, per_channel=True, zero_bias=False, side_bits=8):
    lo, hi = code_range(bits, True)
    codes = rng.choice([-1, 1], size=shape) if bits == 1 else rng.integers(lo, hi + 1, size=shape)
    n_s = n_out if per_channel else 1
    # Scales over a 50x range: exponents need 8 bits, so packing (version 5) is not shorter.
    scale = rng.uniform(0.02, 1, n_s) / (np.prod(shape[1:]) ** 0.5 * max(hi, 1))
    bias = np.zeros(n_out) if zero_bias else rng.normal(0, 0.3, n_out)
    side = CompactSide.from_float(scale, bias, side_bits)
    return LayerCodes(bits, codes=codes.astype(np.int64), side=side, per_channel=per_channel)


def _plain(rng, bits, shape, n_out, *, symmetric, per_channel):
    """A layer with float16 scales and biases (asymmetric, or symmetric per-layer by hand)."""
    lo, hi = code_range(bits, symmetric)
    n_s = n_out if per_channel else 1
    scale = rng.uniform(0.2, 1, n_s) / (np.prod(shape[1:]) ** 0.5 * hi)
    zp = rng.integers(lo, hi + 1, n_s) if not symmetric else np.zeros(n_s)
    return LayerCodes(bits, codes=rng.integers(lo, hi + 1, size=shape).astype(np.int64),
                      scale=scale.astype(np.float16), zero_point=zp.astype(np.uint8),
                      bias=rng.normal(0, 0.3, n_out).astype(np.float16), per_channel=per_channel,
                      symmetric=symmetric)


def _float(rng, shape, n_out):
    w = rng.normal(0, 1 / np.prod(shape[1:]) ** 0.5, shape).astype(np.float32)
    return LayerCodes(0, weight=w, bias=rng.normal(0, 0.3, n_out).astype(np.float32))


def _mlp(rng, activation):
    """Version 1: float32, asymmetric 3-bit per channel, 1-bit symmetric; no MNIST shape."""
    spec = Spec(family="mlp", hidden=(12, 7), activation=activation, in_shape=(2, 5, 5), n_classes=4)
    (s0, n0), (s1, n1), (s2, n2) = layer_shapes(spec)
    return spec, [_float(rng, s0, n0), _plain(rng, 3, s1, n1, symmetric=False, per_channel=True),
                  _compact(rng, 1, s2, n2)], {}


def _cnn_v2(rng):
    """Version 2: stride, padding, a separable block, a flatten head, zstd, lzma, own ANS table."""
    spec = Spec(convs=(Conv(4, 3, stride=2, pad=1), Conv(5, 2, pool=2, separable=True)), hidden=(9,),
                activation="leaky_relu", in_shape=(3, 11, 11), n_classes=6)
    (s0, n0), (s1, n1), (s2, n2), (s3, n3), (s4, n4) = layer_shapes(spec)
    layers = [_plain(rng, 5, s0, n0, symmetric=True, per_channel=False),
              _plain(rng, 8, s1, n1, symmetric=False, per_channel=False),
              _compact(rng, 4, s2, n2), _float(rng, s3, n3), _compact(rng, 2, s4, n4)]
    return spec, layers, {0: "zstd", 1: "lzma", 2: "raw", 4: "ans"}


def _sep_v3(rng):
    """Version 3: per-layer compact sides, a depthwise conv without biases, own ANS tables."""
    spec = Spec(convs=(Conv(6, 3, pool=2), Conv(8, 3, pad=1, separable=True)), head="gap",
                activation="relu6")
    (s0, n0), (s1, n1), (s2, n2), (s3, n3) = layer_shapes(spec)
    layers = [_compact(rng, 3, s0, n0), _compact(rng, 4, s1, n1, per_channel=False, zero_bias=True),
              _compact(rng, 5, s2, n2), _compact(rng, 6, s3, n3, per_channel=False)]
    return spec, layers, {i: "ans" for i in range(4)}


def _sep_v4(rng):
    """Version 4: 4-bit layers sharing one ANS table, and a 3-bit layer with its own (flag 0)."""
    spec = Spec(convs=(Conv(8, 3, pool=2), *(Conv(12, 3, separable=True) for _ in range(3))),
                head="gap")
    shapes = layer_shapes(spec)
    layers = []
    for i, (shape, n_out) in enumerate(shapes):
        depthwise = len(shape) == 4 and shape[1] == 1 and i > 0
        lay = _compact(rng, 3 if i == len(shapes) - 1 else 4, shape, n_out,
                       per_channel=not depthwise, zero_bias=depthwise)
        lim = code_range(lay.bits, True)[1]
        lay.codes = np.clip(np.round(rng.laplace(0, 1.2, shape)), -lim, lim).astype(np.int64)
        layers.append(lay)
    return spec, layers, {len(shapes) - 1: "ans"}


def _sep16_v5(rng):
    """sep16-99's layers with their sides at 5 bits: version 5, per-layer packed sides."""
    dec = container.decode((REPO / "studies/artifacts/sep16-99.mincap").read_bytes())
    for lay in dec.layers:
        lay.side = CompactSide.from_float(lay.side.scale(), lay.side.bias(), 5)
    return dec.spec, dec.layers, {}


CASES = {
    **{f"mlp-{act}": (lambda rng, act=act: _mlp(rng, act)) for act in ACTIVATIONS},
    "cnn-v2": _cnn_v2,
    "sep-v3": _sep_v3,
    "sep-v4": _sep_v4,
    "sep16-v5": _sep16_v5,
}
VERSIONS = {"cnn-v2": 2, "sep-v3": 3, "sep-v4": 4, "sep16-v5": 5}


def _encode(monkeypatch, spec, layers, methods) -> bytes:
    """mincap's file of `layers`, layer i coded with `methods[i]` where given.

    `encode` asks `code_options` once per quantized layer, in order; offering only the method
    named makes it the one chosen."""
    options = container.code_options
    quantized = iter(i for i, lay in enumerate(layers) if lay.bits)

    def offer(sym):
        opts, m = options(sym), methods.get(next(quantized))
        return {m: opts[m]} if m else opts

    with monkeypatch.context() as patch:
        patch.setattr(container, "code_options", offer)
        return container.encode(spec, layers)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_branch_decodes_as_mincap_decodes(case, monkeypatch):
    rng = np.random.default_rng(sorted(CASES).index(case))
    spec, layers, methods = CASES[case](rng)
    data = _encode(monkeypatch, spec, layers, methods)
    assert data[2] == VERSIONS.get(case, 1)
    dec = container.decode(data)
    assert [dec.layers[i].method for i in methods] == list(methods.values())
    ref_spec, ref_layers = ref.decode(data)
    assert tuple(ref_spec["in_shape"]) == spec.in_shape and ref_spec["activation"] == spec.activation
    for (w, b), lay in zip(ref_layers, dec.layers, strict=True):
        assert w.dtype == b.dtype == np.float32
        assert np.array_equal(w, lay.float_weight()) and np.array_equal(b, lay.float_bias())
    x = rng.integers(0, 256, size=(64, *spec.in_shape), dtype=np.uint8)
    mine, theirs = ref.forward(ref_spec, ref_layers, x), _torch_logits(dec.model, x)
    assert np.abs(mine - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())


# ---------------------------------------------------------------------------- docs/format.md


def _numpy_sum(p: list[float]) -> float:
    """docs/format.md: numpy's pairwise sum of a float64 array, in plain Python."""
    m = len(p)
    if m < 8:
        total = 0.0
        for v in p:
            total += v
        return total
    if m <= 128:
        r = p[:8]
        i = 8
        while i < m - m % 8:
            r = [r[j] + p[i + j] for j in range(8)]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for v in p[i:]:
            total += v
        return total
    half = m // 2 - m // 2 % 8
    return _numpy_sum(p[:half]) + _numpy_sum(p[half:])


def _spec_probs(q: np.ndarray) -> list[float]:
    """docs/format.md: the float64 probabilities of a nibble table."""
    p = [2.0 ** ((int(v) - 15) / 2) if v > 0 else 0.0 for v in q]
    total = _numpy_sum(p)
    return [v / total for v in p]


def _spec_cdf(probs: list[float]) -> list[int]:
    """docs/format.md: the 24-bit CDF of constriction's `Categorical(probs, perfect=False)`."""
    k = len(probs)
    norm = 0.0
    for p in probs:  # left to right
        norm += p
    scale = float((1 << 24) - k) / norm
    cdf, cum = [], 0.0
    for i, p in enumerate(probs):
        cdf.append(int(cum * scale) + i)
        cum += p
    return cdf + [1 << 24]


def test_numpy_sums_as_the_format_describes():
    rng = np.random.default_rng(0)
    for m in [*range(1, 257), *rng.integers(1, 257, 200)]:
        q = rng.integers(0, 16, m)
        q[rng.integers(m)] = 15
        assert _spec_probs(q) == ref.table_probs(q).tolist()


class _SpecAnsCoder:
    """docs/format.md's ANS decoder: a 64-bit state, 32-bit words popped from the end."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = [int(w) for w in words]
        self.state = 0
        if self.words:
            self.state = self.words.pop()
            assert self.state != 0
            while self.words and self.state < 1 << 32:
                self.state = self.state << 32 | self.words.pop()

    def decode(self, cdf: list[int], n: int) -> np.ndarray:
        out = []
        for _ in range(n):
            quantile = self.state & ((1 << 24) - 1)
            s = bisect.bisect_right(cdf, quantile) - 1
            self.state = (self.state >> 24) * (cdf[s + 1] - cdf[s]) + quantile - cdf[s]
            if self.state < 1 << 32 and self.words:
                self.state = self.state << 32 | self.words.pop()
            out.append(s)
        return np.array(out, dtype=np.int32)


def test_the_ans_stream_decodes_as_the_format_describes(monkeypatch):
    fake = types.SimpleNamespace(stream=types.SimpleNamespace(
        stack=types.SimpleNamespace(AnsCoder=_SpecAnsCoder),
        model=types.SimpleNamespace(Categorical=lambda probs, perfect: _spec_cdf(probs))))
    files = [(REPO / name).read_bytes() for name in COMMITTED]
    files.append(_encode(monkeypatch, *_sep_v3(np.random.default_rng(1))))
    files.append(_encode(monkeypatch, *_sep_v4(np.random.default_rng(2))))
    n_ans = 0
    for data in files:
        want = ref.decode(data)[1]
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "constriction", fake)
            m.setattr(ref, "table_probs", _spec_probs)
            got = ref.decode(data)[1]
        for (w1, b1), (w2, b2) in zip(want, got, strict=True):
            assert np.array_equal(w1, w2) and np.array_equal(b1, b2)
        n_ans += any(lay.method == "ans" for lay in container.decode(data).layers)
    assert n_ans >= 4


def test_the_worked_example_is_the_committed_file():
    text = (REPO / "docs" / "format.md").read_text()
    dump = re.search(r"```text\n(00000000: .*?)```", text, re.S).group(1)
    rows = re.findall(r"^([0-9a-f]{8}): ((?:[0-9a-f]{2,4} ?)+)", dump, re.M)
    data = b"".join(bytes.fromhex(hx.replace(" ", "")) for _, hx in rows)
    assert data == (REPO / EXAMPLE).read_bytes()
    assert [int(off, 16) for off, _ in rows] == list(range(0, len(data), 16))


# ---------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_exit_2(mnist_root, tmp_path):
    good = (REPO / "studies/artifacts/sep16-99.mincap").read_bytes()
    flipped = bytearray(good)
    flipped[40] ^= 1
    future = bytearray(good)
    future[2] = 9
    cases = {"text.mincap": b"hello, world", "flipped.mincap": bytes(flipped),
             "short.mincap": good[:-9], "future.mincap": bytes(future)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    runs = [(tmp_path / name, mnist_root) for name in cases]
    runs += [(tmp_path / "missing.mincap", mnist_root), (REPO / EXAMPLE, tmp_path)]
    for path, root in runs:
        res = _blocked(DECODER, path, "--data", root)
        assert res.returncode == 2 and res.stdout == "", (path, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("decode.py: "), res.stderr
