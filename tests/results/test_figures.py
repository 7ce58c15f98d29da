"""mincap.results.figures: the ladder figures drawn from summary JSON files (no study, no data)."""

import json
import subprocess
import sys

import matplotlib.image
import numpy as np
from matplotlib.colors import to_rgb

from mincap.cli import main
from mincap.results import figures, ladder


def _pixels(path):
    return matplotlib.image.imread(str(path))


def test_plot_writes_pngs_that_follow_the_results(fakes, run_plot, summaries):
    tmp, paths = fakes
    a = run_plot(tmp, paths, "a")
    b = run_plot(tmp, paths, "b")
    assert a.is_file() and figures.pareto_path(a).is_file() and figures.pareto_path(a).name == "a-pareto.png"
    pa, pb = _pixels(a), _pixels(b)
    assert pa.shape == pb.shape and (pa == pb).all()  # same results, same picture
    changed = summaries["mnist-k2"]
    changed["chosen"]["artifact_bits"] = 3000  # a result changes
    paths[1].write_text(json.dumps(changed))
    c = run_plot(tmp, paths, "c")
    pc = _pixels(c)
    assert pc.shape == pa.shape and (pc != pa).any()
    assert (_pixels(figures.pareto_path(c)) != _pixels(figures.pareto_path(a))).any()


def _marker_rgb(fig, img, x, y):
    """The image's colour at data point (x, y) of the figure's first axes (image row 0 is the top)."""
    px, py = fig.axes[0].transData.transform((x, y))
    return img[int(round(img.shape[0] - py)), int(round(px)), :3]


def test_each_placed_rung_is_a_marker_of_its_colour_in_the_image(fakes, summaries, tmp_path):
    """Each rung's point is in the saved image, at its (X, bits), in its colour; without it, it is not.

    (Replaces `image.std() > 0.01`, which the axes and reference lines alone satisfy.)
    """
    _, paths = fakes
    info = ladder.ladder_info(ladder.load_rungs([str(p) for p in paths]), "prequential", compute=False)
    assert [(p["dataset"], p["x"], p["y"]) for p in info.points] == [
        ("mnist", 7163.0, 14000.0), ("mnist-k2", 150.0, 900.0)]
    fig = figures.draw_ladder(info, "prequential")
    fig.savefig(tmp_path / "with.png")
    img = _pixels(tmp_path / "with.png")
    for i, p in enumerate(info.points):
        assert np.allclose(_marker_rgb(fig, img, p["x"], p["y"]), to_rgb(figures.RUNG_COLORS[i]), atol=0.02), p

    # The same figure with no network chosen: nothing of the rungs' colours where their points were.
    for s in summaries.values():
        s["chosen"] = None
    empty = ladder.ladder_info(list(summaries.values()), "prequential", compute=False)
    assert empty.points == [] and set(empty.skipped) == {"mnist", "mnist-k2"}
    fig_empty = figures.draw_ladder(empty._replace(xlim=info.xlim, ylim=info.ylim, mnist_x=info.mnist_x),
                                    "prequential")
    fig_empty.savefig(tmp_path / "without.png")
    img_empty = _pixels(tmp_path / "without.png")
    for i, p in enumerate(info.points):
        rgb = _marker_rgb(fig_empty, img_empty, p["x"], p["y"])
        assert not np.allclose(rgb, to_rgb(figures.RUNG_COLORS[i]), atol=0.02)


def test_pareto_panels_show_each_front(fakes, summaries):
    infos = [ladder.pareto_info(s) for s in summaries.values()]
    fig = figures.draw_pareto(infos)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["mnist (target 99%)", "mnist-k2 (target 99%)"]
    for ax, info in zip(fig.axes, infos):
        drawn = {tuple(xy) for line in ax.get_lines() for xy in line.get_xydata()}
        assert set(info.front) <= drawn and (info.chosen["artifact_bits"], info.chosen["val_acc"]) in drawn


def test_plot_svg_and_from_json(fakes):
    tmp, paths = fakes
    out = tmp / "fig" / "ladder.svg"
    rc = main(["plot", "--from-json", str(paths[0].parent), "--no-compute", "-o", str(out)])
    assert rc == 0 and out.read_text().lstrip().startswith("<?xml")
    assert (tmp / "fig" / "ladder-pareto.svg").is_file()


def test_missing_estimate_is_reported_not_placed(fakes, run_plot, summaries, capsys):
    tmp, paths = fakes
    s = summaries["mnist-k2"]
    del s["entropy"]["prequential"]
    paths[1].write_text(json.dumps(s))
    run_plot(tmp, paths, "x")
    assert "not placed: mnist-k2 (no prequential estimate" in capsys.readouterr().err


def test_parser_does_not_import_matplotlib():
    r = subprocess.run(
        [sys.executable, "-c", "import sys, mincap.cli; mincap.cli.build_parser(); "
         "print('matplotlib' in sys.modules, 'torch' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert r.stdout.strip() == "False False"


def test_summary_module_does_not_import_matplotlib():
    """`mincap summary` imports mincap.results.summary; the package's lazy re-exports keep matplotlib out."""
    r = subprocess.run(
        [sys.executable, "-c", "import sys, mincap.results.summary, mincap.results; "
         "print('matplotlib' in sys.modules, callable(mincap.results.plot_ladder), 'matplotlib' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert r.stdout.strip() == "False True True", r.stderr


def test_axes_say_they_are_bounds_and_mackay_is_drawn_at_the_files_width(summaries, tmp_path):
    """Issue 16: labels name the estimator and the bound; MacKay's line is y = (w / 2) x with w in its legend."""
    from tests.results.conftest import VERIFY

    info = ladder.ladder_info(list(summaries.values()), "prequential", compute=False,
                              artifacts=[{**VERIFY, "source": "small-99.verify.json"}])
    fig = figures.draw_ladder(info, "prequential")
    ax = fig.axes[0]
    assert "upper bound on the minimum" in ax.get_ylabel() and "upper bound" in ax.get_xlabel()
    assert "MLP" in ax.get_xlabel()
    (mackay,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("MacKay")]
    xs, ys = mackay.get_data()
    assert np.allclose(np.asarray(ys) / np.asarray(xs), info.mackay_width / 2) and info.mackay_width == 4
    assert "4 bits per weight" in mackay.get_label()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("two-part" in t for t in legend) and any("documented command, outside a search" in t for t in legend)
    # the two-part codes, the switching code and the file's network are drawn where their data say
    drawn = {(round(float(x)), round(float(y))) for ln in ax.get_lines() for x, y in ln.get_xydata()}
    fx = round(7163 * figures.FILE_SHIFT)  # a file is drawn just right of its rung's X
    assert {(7163, 19500), (7163, 4100), (fx, 9000), (fx, 15000)} <= drawn
    # the replicate bar spans the seeds' bits, in the rung's colour
    bar = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [13800.0, 14600.0]]
    assert bar and np.allclose(to_rgb(bar[0].get_color()), to_rgb(figures.RUNG_COLORS[0]))
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "2/3 other seeds reach it" in texts and "small-99.mincap (mincap train)" in texts
    fig.savefig(tmp_path / "f.png")
    img = _pixels(tmp_path / "f.png")
    f = info.files[0]
    assert np.allclose(_marker_rgb(fig, img, f["x"] * figures.FILE_SHIFT, f["y"]), to_rgb(figures.RUNG_COLORS[0]), atol=0.02)
