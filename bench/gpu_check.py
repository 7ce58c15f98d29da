"""The prepared GPU check (entry point: bench/gpu_check.sh): what a session lent a GPU measures.

Prints, in this order:

1. `device:` the device's name (the GPU's, or the CPU's with `--cpu`);
2. `<preset> one at a time:` seconds per epoch of the preset (default `sep-1.8k`) with the default
   study's seed recipe (studies/mnist-99.toml: batch 256, 4-bit LSQ), one float epoch after a
   warm-up epoch and one quantization-aware epoch, `mincap.compression.qat.train_quantized`;
3. `<preset> batched:` the same in a batched group of `GPU_GROUP` trials
   (`mincap.training.batched.train_many`, max quantizer: its only one), or why the engine
   does not train it (sep-1.8k: depthwise-separable blocks);
4. `default study:` the trials per hour of the default study: `mincap search` on a copy of
   studies/mnist-99.toml (its own storage in a temporary folder) for `--search-s` seconds,
   counting the trials that finished before the deadline;
5. `one-shot supernet:` seconds per float and per quantization-aware epoch of the one-shot
   study's supernet (studies/mnist-99-oneshot.toml's space and recipe, not cached), and seconds
   per scored sub-network (batch norm re-estimated, written, decoded, scored on validation) over
   a few random ones: what decides whether the one-shot A/B (issue 29) turns on a GPU.

Budgets: on the GPU the whole train split and a 300 s search, under 9 minutes in all;
`--cpu` 5,000 train images and a 120 s search; `--cpu --quick` (the test) 500 images and a
5 s search. Nothing is selected on the test set; nothing is installed.

    python bench/gpu_check.py [--cpu] [--quick] [--data-dir DIR] [--preset sep-1.8k] [--search-s S]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "studies" / "mnist-99.toml"


def _budget(args) -> tuple[int | None, int, float]:
    """(train images or None for all, validation images, search seconds) for the mode."""
    if args.quick:
        return 500, 500, args.search_s or 5.0
    if args.cpu:
        return 5000, 5000, args.search_s or 120.0
    return None, 5000, args.search_s or 300.0


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:  # the model name, where Linux says it
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu} ({torch.get_num_threads()} torch threads, torch {torch.__version__})"


def seed_trial(preset: str, cfg):
    """(spec, TrainConfig, CompressConfig) of `preset` as the default study trains its seed (its
    first seed of that preset, else the preset with [seed_recipe])."""
    import optuna

    from mincap.search import preset_params, sample_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = next((s for s in cfg.study.seeds if s.split("@")[0] == preset), preset)
    study = optuna.create_study(directions=["minimize", "maximize"])
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # a preset outside the space: its values are used as they are
        study.enqueue_trial(preset_params(name, cfg))
        return sample_trial(study.ask(), cfg, (1, 28, 28), 10)


def epoch_times(preset: str, cfg, splits, device) -> tuple[str, str]:
    """The one-at-a-time and the batched lines for `preset`."""
    from mincap.compression.qat import qat_plan, train_quantized
    from mincap.search.run import GPU_GROUP
    from mincap.training.batched import batch_refusal, train_many

    spec, train_cfg, comp = seed_trial(preset, cfg)
    # Epoch 1 warms up (cuDNN's algorithm search, allocations); epoch 2 is float, epoch 3 QAT.
    train_cfg = replace(train_cfg, epochs=3)
    comp = replace(comp, qat_epochs=1, anneal_epochs=0)
    n = len(splits.train)
    _, history, _ = train_quantized(spec, splits, train_cfg, comp, device=device)
    solo = (
        f"{preset} one at a time: {history[1].time_s:.2f} s per float epoch, "
        f"{history[2].time_s:.2f} s per "
        f"{comp.quantizer} QAT epoch ({n:,} train images, batch {train_cfg.batch_size})"
    )
    comp_b = replace(comp, quantizer="max")
    why = batch_refusal(spec, comp_b)
    if why is not None:
        return solo, f"{preset} batched: not supported (the batched engine does not train {why})"
    cfgs = [replace(train_cfg, seed=train_cfg.seed + i) for i in range(GPU_GROUP)]
    out = train_many(
        [spec] * GPU_GROUP,
        splits,
        cfgs,
        device=device,
        quant=[qat_plan(spec, c, comp_b) for c in cfgs],
    )
    h = out[0].result.history
    batched = (
        f"{preset} batched, a group of {GPU_GROUP}: {h[1].time_s:.2f} s per float epoch "
        f"({h[1].time_s / GPU_GROUP:.2f} s a trial), {h[2].time_s:.2f} s per max QAT epoch "
        f"({h[2].time_s / GPU_GROUP:.2f} s a trial)"
    )
    return solo, batched


def study_copy(folder: Path, limit: int | None, n_val: int) -> Path:
    """studies/mnist-99.toml under another name, stored in `folder`, on `limit` train images."""
    text, named = re.subn(
        r'^name = "[^"]+"', 'name = "gpu-check"', STUDY.read_text(), count=1, flags=re.M
    )
    data = f"n_val = {n_val}" + (f"\nlimit = {limit}" if limit else "")
    text, split = re.subn(r"^n_val = \d+", data, text, count=1, flags=re.M)
    if not (named and split):
        raise SystemExit(
            "gpu_check: studies/mnist-99.toml has no [study] name or [data] n_val line to change"
        )
    f = folder / "gpu-check.toml"
    f.write_text(text)
    return f


def search_rate(args, device, limit, n_val, search_s: float) -> str:
    """Run the default study for `search_s` seconds; the `default study:` line."""
    import optuna

    from mincap.config.study import load_study_file

    with tempfile.TemporaryDirectory(prefix="mincap-gpu-check-") as tmp:
        f = study_copy(Path(tmp), limit, n_val)
        cmd = [
            sys.executable,
            "-m",
            "mincap.cli",
            "search",
            str(f),
            "--timeout",
            f"{search_s:.0f}s",
            "--no-progress",
            "--device",
            device.type,
        ]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        t0 = time.perf_counter()
        # The search stops its trials at their next epoch after the deadline: 120 s of grace.
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=search_s + 120)
        except subprocess.TimeoutExpired:
            return (
                f"default study: mincap search did not stop within 120 s of its {search_s:.0f} s "
                "deadline"
            )
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
            return f"default study: mincap search exited {p.returncode}: {last}"
        cfg = load_study_file(f)
        trials = optuna.load_study(study_name=cfg.study.name, storage=cfg.storage_url).get_trials()
    at_deadline = [t for t in trials if "--timeout" in t.user_attrs.get("stop_reason", "")]
    done = [t for t in trials if t.state.is_finished() and t not in at_deadline]
    states = Counter(t.state.name.lower() for t in done)
    told = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
    return (
        f"default study: {len(done) / wall * 3600:.0f} trials/h "
        f"({len(done)} finished in {wall:.0f} s: "
        f"{told}; {len(at_deadline)} stopped at the {search_s:.0f} s deadline)"
    )


ONESHOT_STUDY = REPO / "studies" / "mnist-99-oneshot.toml"


def oneshot_times(splits, device, n_subnets: int = 4) -> str:
    """The `one-shot supernet:` line: 3 epochs (a warm-up, one float, one QAT), not cached, then
    `n_subnets` random sub-networks scored."""
    import torch

    from mincap.config.study import load_study_file
    from mincap.oneshot.score import score_subnet
    from mincap.oneshot.trainer import random_subnet, train_supernet

    cfg = load_study_file(ONESHOT_STUDY)
    space = cfg.oneshot.space(splits.in_shape, splits.n_classes)
    recipe = replace(cfg.oneshot.recipe(), epochs=3, qat_fraction=1 / 3, largest_epochs=0)
    run = train_supernet(space, splits, recipe, device=device, use_cache=False, progress=False)
    h = run.history
    gen = torch.Generator().manual_seed(0)
    calib = min(cfg.oneshot.calib_images, len(splits.train))
    t0 = time.perf_counter()
    for _ in range(n_subnets):
        score_subnet(run.net, random_subnet(run.net.space, gen, quantized=True), splits, calib_images=calib,
                     device=device)
    per = (time.perf_counter() - t0) / n_subnets
    return (f"one-shot supernet: {h[1]['time_s']:.2f} s per float epoch, {h[2]['time_s']:.2f} s per QAT epoch "
            f"({len(splits.train):,} train images); {per:.2f} s per scored sub-network "
            f"({n_subnets} random, {calib:,} calibration images)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (a smaller budget)")
    ap.add_argument(
        "--quick", action="store_true", help="with --cpu: the smallest budget (the test's)"
    )
    ap.add_argument(
        "--data-dir", default=None, help="folder holding MNIST/raw (default: mincap's search path)"
    )
    ap.add_argument(
        "--preset", default="sep-1.8k", help="the network timed per epoch (mincap/nets/models.py)"
    )
    ap.add_argument("--search-s", type=float, default=0.0, help="seconds of default-study search")
    args = ap.parse_args(argv)

    import torch

    from mincap import data
    from mincap.config.study import load_study_file
    from mincap.errors import MincapError
    from mincap.training.engine import pick_device

    try:
        if not args.cpu and not torch.cuda.is_available():
            raise MincapError(
                "no CUDA device here; run with --cpu (a smaller budget) to check the script"
            )
        device = pick_device("cpu" if args.cpu else "cuda")
        limit, n_val, search_s = _budget(args)
        print(f"device: {device_name(device)}", flush=True)
        cfg = load_study_file(STUDY)
        splits = data.load(
            "mnist",
            root=args.data_dir,
            n_val=n_val,
            split_seed=cfg.data.split_seed,
            limit=limit,
            device=device,
        )
        for line in epoch_times(args.preset, cfg, splits, device):
            print(line, flush=True)
        print(search_rate(args, device, limit, n_val, search_s), flush=True)
        print(oneshot_times(splits, device), flush=True)
    except MincapError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
