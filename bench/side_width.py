"""What narrower side numbers save: each file's biases and scale exponents re-rounded to fewer bits,
the weight codes untouched, re-encoded, DECODED, and the decoded network scored on validation.

A small network's file is one fifth side information: in the 4-bit files of `bench/levers.py`
(1,226 weights), ~1,150 of ~5,900 bits are the per-channel biases and scale exponents at 6 bits.
`mincap train --path "...;side=B"` exports a trained network at B bits; this bench asks the same
question of files already written, in seconds: every symmetric layer's `CompactSide` is rounded
again (`CompactSide.from_float(scale, bias, side_bits=B)`, from the values the file decodes to),
the file re-encoded by `mincap.format.container.encode` (format version 5 packs the side at its
width where that is shorter), decoded, and scored on the validation split. Rounding the decoded
6-bit values again rounds twice, so it may lose a little more than exporting the trained floats
at B bits (`side=B`) would. The test set is never read.

    python bench/side_width.py /work/runs/levers/files/*.mincap --widths 6,5,4,3
    python bench/side_width.py FILES --out bench/results/side_width.json

Cost: one validation pass per file and width (a few seconds on one core for 1.2k weights).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path


def resided(dec, side_bits: int) -> bytes:
    """`dec`'s file with every compact layer's side re-rounded to `side_bits` (codes unchanged)."""
    from mincap.format.container import encode
    from mincap.format.side import CompactSide

    layers = copy.deepcopy(dec.layers)
    for lay in layers:
        if lay.side is not None:
            lay.side = CompactSide.from_float(lay.side.scale(), lay.side.bias(), side_bits=side_bits)
    return encode(dec.spec, layers)


def measure(paths: list[str], widths: list[int], *, dataset: str, data_dir: str | None) -> list[dict]:
    from mincap import data
    from mincap.format import container as artifact
    from mincap.training.engine import evaluate

    splits = data.load(dataset, root=data_dir)  # train and validation only: no test image
    rows = []
    for path in paths:
        raw = artifact.read(path)
        dec = artifact.decode(raw)
        row = {"file": Path(path).name, "stored": {"bits": 8 * len(raw), "val_acc": evaluate(dec.model, splits.val)[0]}}
        for b in widths:
            out = artifact.decode(resided(dec, b))
            row[str(b)] = {"bits": out.size["artifact_bits"], "val_acc": evaluate(out.model, splits.val)[0]}
        rows.append(row)
        cells = "  ".join(f"side {b}: {row[str(b)]['bits']:,} b {100 * row[str(b)]['val_acc']:.2f}%" for b in widths)
        print(f"side_width: {row['file']}: stored {row['stored']['bits']:,} b "
              f"{100 * row['stored']['val_acc']:.2f}%  {cells}", flush=True)
    return rows


def summarize(rows: list[dict], widths: list[int]) -> dict:
    """Mean change against the stored file, per width, over the files."""
    out = {}
    for b in widths:
        d_bits = [r[str(b)]["bits"] - r["stored"]["bits"] for r in rows]
        d_acc = [r[str(b)]["val_acc"] - r["stored"]["val_acc"] for r in rows]
        out[str(b)] = {"files": len(rows), "mean_delta_bits": statistics.mean(d_bits),
                       "mean_delta_val_points": 100 * statistics.mean(d_acc),
                       "worst_delta_val_points": 100 * min(d_acc)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", metavar="FILE.mincap")
    ap.add_argument("--widths", default="6,5,4,3", help="side widths to try, comma-separated (2..8)")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="write the rows and the summary as JSON here")
    args = ap.parse_args(argv)
    try:
        widths = [int(x) for x in args.widths.split(",") if x]
    except ValueError:
        print(f"side_width: --widths {args.widths!r} is not a comma-separated list of integers", file=sys.stderr)
        return 2
    if bad := [b for b in widths if not 2 <= b <= 8]:
        print(f"side_width: side widths must be in 2..8, got {', '.join(map(str, bad))}", file=sys.stderr)
        return 2
    if missing := [p for p in args.files if not os.path.isfile(p)]:
        print(f"side_width: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2

    from mincap.errors import MincapError

    try:
        rows = measure(args.files, widths, dataset=args.dataset, data_dir=args.data_dir)
    except MincapError as e:
        print(f"side_width: {e}", file=sys.stderr)
        return 2
    summary = summarize(rows, widths)
    for b, s in summary.items():
        print(f"side_width: side {b}: {s['mean_delta_bits']:+,.0f} bits, {s['mean_delta_val_points']:+.2f} points "
              f"(worst {s['worst_delta_val_points']:+.2f}) over {s['files']} files")
    if args.out:
        doc = {"bench": "side_width", "date": datetime.date.today().isoformat(), "dataset": args.dataset,
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
               "rows": rows, "summary": summary}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
