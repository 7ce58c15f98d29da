"""bench/side_width.py: re-rounding a file's side keeps its codes, is idempotent at the width it
was stored at, and narrower widths give shorter files whose decoded sides are the coarser ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import side_width  # noqa: E402

from mincap.format.codes import LayerCodes  # noqa: E402
from mincap.format.container import decode, encode  # noqa: E402
from mincap.format.side import CompactSide  # noqa: E402
from mincap.format.spec import layer_shapes  # noqa: E402
from mincap.nets.models import Conv, Spec  # noqa: E402

SPEC = Spec(convs=(Conv(6, 3, pool=2, pad=1), Conv(12, 3, pad=1)), head="gap")


def _file(side_bits: int) -> bytes:
    rng = np.random.default_rng(3)
    layers = [LayerCodes(4, codes=rng.integers(-7, 8, size=shape).astype(np.int64),
                         side=CompactSide.from_float(rng.uniform(0.01, 1, n), rng.normal(size=n), side_bits=side_bits))
              for shape, n in layer_shapes(SPEC)]
    return encode(SPEC, layers)


def test_same_width_is_the_same_file_and_narrower_is_shorter_with_the_same_codes():
    raw = _file(6)
    dec = decode(raw)
    assert side_width.resided(dec, 6) == raw  # rounding 6-bit values to 6 bits again changes nothing
    narrow = decode(side_width.resided(dec, 3))
    assert len(side_width.resided(dec, 3)) < len(raw)
    for a, b in zip(dec.layers, narrow.layers):
        np.testing.assert_array_equal(a.codes, b.codes)
        assert np.abs(b.side.bias_k.astype(int)).max() <= 3  # a 3-bit bias: +-(2^2 - 1)
        assert not np.array_equal(a.side.bias(), b.side.bias())


def test_bad_widths_and_missing_files_exit_2(tmp_path, capsys):
    assert side_width.main([str(tmp_path / "none.mincap")]) == 2
    assert "no such file" in capsys.readouterr().err
    f = tmp_path / "a.mincap"
    f.write_bytes(_file(6))
    assert side_width.main([str(f), "--widths", "9"]) == 2
    assert "2..8" in capsys.readouterr().err
    assert side_width.main([str(f), "--widths", "x"]) == 2
