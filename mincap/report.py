"""Rich tables and progress displays shared by the commands.

Tables are built from plain dicts (the same dicts `--json` prints), so what the
user reads and what a script parses cannot drift apart; tests render them at a
fixed width and compare with golden text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = [
    "console", "epoch_progress", "fmt_acc", "fmt_bits", "fmt_bits_unit", "fmt_duration", "fmt_target",
    "plain_every", "render", "size_table", "spec_short", "train_table",
]

_stderr = Console(stderr=True)


def spec_short(spec_json: str | None, bits_per_layer=None) -> str:
    """A compact spec: conv blocks as channels x kernel (`sep`: depthwise-separable, /p2 = 2x2 pool),
    head, hidden, bits per layer (a separable block has two: depthwise, then 1x1)."""
    if not spec_json:
        return "-"
    try:
        d = json.loads(spec_json)
    except ValueError:
        return spec_json
    parts = []
    convs = d.get("convs") or []
    if convs:
        parts.append("conv " + " ".join(
            f"{c[0]}x{c[1]}" + ("sep" if c[5:6] == [1] else "") + (f"s{c[2]}" if c[2] != 1 else "")
            + (f"/p{c[3]}" if c[3] > 1 else "")
            for c in convs))
    if d.get("family") == "cnn" and convs:
        parts.append(d.get("head", "flatten"))
    if d.get("hidden"):
        parts.append("fc " + "-".join(map(str, d["hidden"])))
    if d.get("batch_norm"):
        parts.append("bn")
    text = ", ".join(parts) or d.get("family", "?")
    if bits_per_layer:
        text += f"; bits {'/'.join(map(str, bits_per_layer))}"
    return text


def console() -> Console:
    return Console()


def fmt_acc(acc: float | None) -> str:
    return "-" if acc is None else f"{100 * acc:.2f}%"


def fmt_bits(bits: float | None) -> str:
    return "-" if bits is None else f"{bits:,.0f}"


def fmt_bits_unit(bits: float | None) -> str:
    """Bits with their unit, short when large: '5,232 bits', '42.9 kbit', '1.5 Mbit'."""
    if bits is None:
        return "-"
    if bits >= 1e6:
        return f"{bits / 1e6:.3g} Mbit"
    if bits >= 1e4:
        return f"{bits / 1e3:.3g} kbit"
    return f"{fmt_bits(bits)} bits"


def fmt_target(target: float) -> str:
    """A target accuracy without trailing zeros: 0.99 -> '99%', 0.985 -> '98.5%'."""
    return f"{100 * target:.2f}".rstrip("0").rstrip(".") + "%"


def fmt_duration(seconds: float | None) -> str:
    """A duration in the unit that reads best: '45 s', '12.5 min', '1.50 h'."""
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def render(renderable, width: int = 100) -> str:
    """Plain text of a rich renderable at a fixed width (for golden tests and files)."""
    c = Console(width=width, record=True, color_system=None, force_terminal=False)
    with c.capture() as cap:
        c.print(renderable)
    return cap.get()


def train_table(out: dict) -> Table:
    t = Table(title=f"mincap train: {out['dataset']}", show_header=True, header_style="bold")
    t.add_column("field")
    t.add_column("value", justify="right")
    t.add_row("parameters", f"{out['n_params']:,}")
    t.add_row("train / val images", f"{out['n_train']:,} / {out['n_val']:,}")
    t.add_row("epochs", str(out["epochs"]))
    t.add_row("validation accuracy", fmt_acc(out["val_acc"]))
    if "test_acc" in out:  # only with --test: a report, not for choosing
        t.add_row("test accuracy", fmt_acc(out["test_acc"]))
    t.add_row("train time (s)", f"{out['train_time_s']:.1f}")
    t.add_row("device", out["device"])
    for key, label in (("artifact_bits", "artifact bits"), ("nominal_bits", "nominal bits")):
        if key in out:
            t.add_row(label, fmt_bits(out[key]))
    return t


def plain_every(epochs: int) -> int:
    """How many epochs apart plain progress lines go (besides the last): 5, or a twentieth of a
    run longer than 100 epochs."""
    return max(5, -(-epochs // 20))


@contextlib.contextmanager
def epoch_progress(epochs: int, *, enabled: bool = True, label: str = "training",
                   console: Console | None = None) -> Iterator:
    """A progress bar over epochs; yields the `on_epoch` callback for `mincap.training.engine.train`.

    Off a terminal (a log file) it writes a line instead, flushed, every `plain_every(epochs)`
    epochs and at the last: a bar there would show only once, at the end."""
    console = console or _stderr
    if not enabled:
        yield lambda stats: None
        return
    if not console.is_terminal:
        every, done = plain_every(epochs), [0]

        def on_line(stats) -> None:
            done[0] += 1
            if done[0] % every == 0 or done[0] == epochs:
                print(f"{label}: epoch {done[0]}/{epochs}  loss {stats.train_loss:.4f}  val {fmt_acc(stats.val_acc)}",
                      file=console.file, flush=True)

        yield on_line
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=epochs, loss="-", val="-")

        def on_epoch(stats) -> None:
            progress.update(task, advance=1, loss=f"{stats.train_loss:.4f}", val=fmt_acc(stats.val_acc))

        yield on_epoch


def size_table(out: dict) -> Table:
    """The honest size of a network: artifact bits first, then what the file holds, layer by layer."""
    title = f"mincap size: {out.get('file') or out.get('artifact') or out.get('dataset', '')}"
    t = Table(title=title, show_header=True, header_style="bold")
    for col, just in (("layer", "left"), ("shape", "left"), ("bits", "right"), ("method", "left"),
                      ("nonzero w", "right"), ("codes", "right"), ("scales", "right"), ("biases", "right"),
                      ("total", "right"), ("nominal", "right")):
        t.add_column(col, justify=just)
    for row in out.get("layers", []):
        code = row.get("ans_bits_est")
        code_txt = f"~{code:,.0f}" if code is not None else f"{row['code_bits']:,}"
        total = row["total_bits"] + (code or 0)
        t.add_row(
            f"{row['kind'][0]}{row['layer']}", "x".join(map(str, row["shape"])), str(row["bits"]), row["method"],
            f"{row['n_nonzero']:,}/{row['n_weights']:,}", code_txt, f"{row['scale_bits']:,}", f"{row['bias_bits']:,}",
            f"{'~' if code is not None else ''}{total:,.0f}", f"{row['nominal_bits']:,}",
        )
    t.add_section()
    if "header_bits" in out:
        t.add_row("header+spec", "", "", "", "", "", "", "", f"{out['header_bits']:,}", "")
        t.add_row("ANS stream", "", "", "ans", "", "", "", "", f"{out['ans_stream_bits']:,}", "")
        t.add_row("CRC32", "", "", "", "", "", "", "", f"{out['checksum_bits']:,}", "")
    t.add_row("[bold]artifact[/bold]", "", "", "", f"{out['n_nonzero']:,}/{out['n_params']:,} p", "", "", "",
              f"[bold]{out['artifact_bits']:,}[/bold]", f"{out['nominal_bits']:,}")
    accs = [f"{label} {fmt_acc(out[k])}" for k, label in (("val_acc", "validation accuracy"),
                                                            ("test_acc", "test accuracy")) if out.get(k) is not None]
    if accs:
        t.caption = f"{'   '.join(accs)}   parameters {out['n_params']:,}   artifact {out['artifact_bits']:,} bits"
    if out.get("two_part"):
        tp = out["two_part"]
        t.caption = (t.caption or "") + (f"\ntwo-part code: {out['artifact_bits']:,} + {tp['label_bits']:,.0f} bits for "
                                         f"the {tp['n_labels']:,} training labels = {tp['total_bits']:,.0f} bits")
    return t
