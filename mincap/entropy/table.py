"""The `mincap entropy` table, built from the same dicts `--json` prints."""

from __future__ import annotations

from rich import box
from rich.table import Table

__all__ = ["entropy_table", "fmt_amount"]


def fmt_amount(bits: float | None, unit: str = "bit") -> str:
    """1234567 -> '1.23 M' + unit; '-' for None."""
    if bits is None:
        return "-"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(bits) >= scale:
            return f"{bits / scale:.2f} {prefix}{unit}"
    return f"{bits:.1f} {unit}"


def _note(row: dict) -> str:
    d = row.get("details") or {}
    if row["estimator"].startswith("prequential") and "fraction_of_uniform" in d:
        cut = ", budget hit" if d.get("budget_hit") else ""
        return f"{100 * d['fraction_of_uniform']:.1f}% of uniform code{cut}"
    if row["estimator"] == "compressed" and "best" in d:
        return f"best: {d['best']}"
    if row["estimator"] == "labels" and "uniform_bits_per_example" in d:
        return f"uniform: {d['uniform_bits_per_example']:.3f} bit/label"
    if row["estimator"] in ("asker", "pixels"):
        return f"pixel > {row['settings'].get('threshold', 0):g}"
    return ""


def entropy_table(rows: list[dict]) -> Table:
    """Dataset x estimator: bits per example, total, MacKay params, what the figure bounds."""
    t = Table(title="mincap entropy (official training sets)", header_style="bold", box=box.SIMPLE_HEAD)
    t.add_column("dataset", no_wrap=True)
    t.add_column("estimator", no_wrap=True)
    t.add_column("bits/example", justify="right", no_wrap=True)
    t.add_column("total", justify="right", no_wrap=True)
    t.add_column("MacKay", justify="right", no_wrap=True)
    t.add_column("what it bounds / note")
    for r in rows:
        per = "-" if r["bits_per_example"] is None else f"{r['bits_per_example']:,.2f}"
        mk = r["mackay_params"]
        note = ", ".join(s for s in (_note(r), "cached" if r.get("cached") else "") if s)
        t.add_row(
            r["dataset"],
            r["estimator"],
            per,
            fmt_amount(r["bits_total"]),
            "-" if mk is None else (f"{mk:,.0f}" if mk < 1e6 else fmt_amount(mk, "")),
            r["bounds"] + (f"\n[dim]{note}[/dim]" if note else ""),
        )
    t.caption = (
        "MacKay: parameters 'needed' at 2 bits per weight = bits / 2, of the total where there is one, "
        "else per example (the learner's 191 bits -> 95). Totals: whole training set."
    )
    return t
