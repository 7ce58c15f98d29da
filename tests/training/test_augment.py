"""Geometric augmentation (mincap.training.augment): seeded, within its ranges, one resampling per
batch, off by default (the engine then trains exactly as the shift-only engine did), and in the CLI
and study spaces."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
import torch.nn.functional as F

from mincap.cli import main
from mincap.config import AUGMENT_RANGES, TrainConfig
from mincap.config.study import parse_study
from mincap.data import Split, Splits
from mincap.errors import MincapError
from mincap.nets import models
from mincap.nets.models import Conv, Spec, prepare
from mincap.training import augment as aug
from mincap.training import batched
from mincap.training import engine as train

FULL = aug.Warp(
    rotate_deg=15, scale_frac=0.15, shear_deg=10, translate_px=2, elastic_alpha=34, elastic_sigma=4
)


def _dot(n: int, size: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, :, row, col] = 1.0
    return x


def _centroids(x: torch.Tensor) -> torch.Tensor:
    """Each image's intensity centroid (n, 2) as (x, y) in pixels about the image centre."""
    n, _, h, w = x.shape
    m = x[:, 0]
    ys = torch.arange(h, dtype=x.dtype) - (h - 1) / 2
    xs = torch.arange(w, dtype=x.dtype) - (w - 1) / 2
    total = m.sum((1, 2))
    return torch.stack(
        [(m * xs[None, None, :]).sum((1, 2)) / total, (m * ys[None, :, None]).sum((1, 2)) / total],
        1,
    )


def test_same_seed_same_batch_other_seed_differs():
    x = torch.rand(32, 1, 28, 28)
    a = aug.augment(x, FULL, aug.warp_generator(7))
    b = aug.augment(x, FULL, aug.warp_generator(7))
    c = aug.augment(x, FULL, aug.warp_generator(8))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1
    assert a.shape == x.shape and a.is_contiguous()
    # The generator advances: the next batch of the same run is another distortion.
    g = aug.warp_generator(7)
    first, second = aug.augment(x, FULL, g), aug.augment(x, FULL, g)
    assert torch.equal(first, a) and (second - a).abs().max() > 0.1


def test_warp_generator_is_apart_from_the_batch_generator():
    g, b = aug.warp_generator(3), torch.Generator().manual_seed(3)
    assert not torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=b))


def test_identity_settings_return_the_batch_unchanged():
    x = torch.rand(16, 1, 28, 28)
    out = aug.augment(x, aug.Warp(elastic_sigma=9.0), aug.warp_generator(0))  # alpha 0: no elastic
    assert torch.allclose(out, x, atol=1e-5)
    assert not aug.Warp(elastic_sigma=9.0).active and aug.Warp(elastic_alpha=1).active


def test_pure_rotation_moves_a_pixel_along_its_circle():
    # 29 x 29: the centre is pixel (14, 14); the dot sits 10 px right of it.
    x = _dot(256, 29, 14, 24)
    out = aug.augment(x, aug.Warp(rotate_deg=30), aug.warp_generator(1))
    c = _centroids(out)
    radius = c.norm(dim=1)
    angle = torch.rad2deg(torch.atan2(c[:, 1], c[:, 0]))
    assert (radius - 10).abs().max() < 0.15
    assert angle.abs().max() <= 30 + 0.5
    assert angle.min() < -20 and angle.max() > 20  # the whole range is drawn, both ways
    assert torch.allclose(out.sum((1, 2, 3)), torch.ones(256), atol=0.1)  # area, to bilinear error


def test_scale_and_shear_stay_within_their_ranges():
    x = _dot(256, 29, 14, 24)  # (10, 0) about the centre
    r = _centroids(aug.augment(x, aug.Warp(scale_frac=0.2), aug.warp_generator(2))).norm(dim=1)
    assert r.min() >= 8 - 0.05 and r.max() <= 12 + 0.05 and r.min() < 8.5 and r.max() > 11.5
    x = _dot(256, 29, 24, 14)  # (0, 10): a horizontal shear moves it sideways by tan(a) * 10
    c = _centroids(aug.augment(x, aug.Warp(shear_deg=20), aug.warp_generator(3)))
    bound = math.tan(math.radians(20)) * 10
    assert c[:, 0].abs().max() <= bound + 0.05 and c[:, 0].abs().max() > 0.8 * bound
    assert (c[:, 1] - 10).abs().max() < 0.05


def test_translation_stays_within_its_bound():
    x = _dot(512, 28, 14, 14)
    c = _centroids(aug.augment(x, aug.Warp(translate_px=2), aug.warp_generator(4)))
    d = c - torch.tensor([0.5, 0.5])  # pixel (14, 14) is half a pixel off the centre of 28
    assert d.abs().max() <= 2 + 1e-4
    assert d[:, 0].abs().max() > 1.8 and d[:, 1].abs().max() > 1.8
    assert d[:, 0].min() < 0 < d[:, 0].max()


def test_elastic_field_is_smooth_scaled_by_alpha_and_simard_sized():
    w34, w17 = (
        aug.Warp(elastic_alpha=34, elastic_sigma=4),
        aug.Warp(elastic_alpha=17, elastic_sigma=4),
    )
    f34 = aug.elastic_field(w34, 64, 28, 28, aug.warp_generator(5))
    f17 = aug.elastic_field(w17, 64, 28, 28, aug.warp_generator(5))
    assert torch.allclose(f17 * 2, f34, atol=1e-6)
    px = f34 * 14  # normalized units -> pixels (2 / 28 per pixel)
    assert 0.8 < float(px.std()) < 2.0 and float(px.abs().max()) < 8
    # Smooth: neighbouring pixels move almost together (raw noise would differ by ~alpha / 2).
    assert float((px[:, 1:] - px[:, :-1]).abs().mean()) < 0.3
    k = aug.gaussian_kernel(4.0)
    assert abs(float(k.sum()) - 1) < 1e-9 and len(k) == 33  # 4 sigma each side
    # The matrix is the zero-padded convolution with that kernel.
    v = torch.rand(3, 1, 1, 28, dtype=torch.float64)
    conv = F.conv2d(v, k.view(1, 1, 1, -1), padding=(0, 16))[:, 0, 0]
    assert torch.allclose(v[:, 0, 0] @ aug.smoothing_matrix(4.0, 28).T, conv, atol=1e-12)


def test_one_affine_grid_and_one_grid_sample_per_batch(monkeypatch):
    calls = {"affine_grid": 0, "grid_sample": 0}
    for name in calls:
        real = getattr(F, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(F, name, counted)
    aug.augment(torch.rand(64, 1, 28, 28), FULL, aug.warp_generator(0))
    assert calls == {"affine_grid": 1, "grid_sample": 1}


def _reference_shift_train(model, splits, cfg):
    """The engine's training loop as it was before augment.py (shift only, no distillation)."""
    x = prepare(splits.train.x)
    y = splits.train.y
    n = len(y)
    bs = min(cfg.batch_size, n)
    steps = max(1, n // bs)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train.one_cycle(cfg.epochs * steps))
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = perm[i * bs : (i + 1) * bs]
            xb = x[idx]
            if cfg.augment_shift:
                xb = train._shift(xb, cfg.augment_shift, gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


@pytest.fixture
def small(mnist_small):
    s = mnist_small
    return Splits(s.name, Split(s.train.x[:1024], s.train.y[:1024]), s.val, s.n_classes)


def test_engine_with_the_settings_off_is_the_shift_engine(small):
    cfg = TrainConfig(epochs=1, batch_size=128, augment_shift=1, seed=3, elastic_sigma=7.0)
    ref = train.init_model(models.PRESETS["tiny"], 3)
    _reference_shift_train(ref, small, cfg)
    got = train.init_model(models.PRESETS["tiny"], 3)
    train.train(got, small, cfg)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k


def test_engine_with_a_warp_is_seeded_and_changes_training(small):
    cfg = TrainConfig(
        epochs=1, batch_size=128, augment_shift=1, seed=3, rotate_deg=10, elastic_alpha=20
    )
    runs = []
    for seed in (3, 3, 4):
        m = train.init_model(models.PRESETS["tiny"], 3)
        train.train(m, small, TrainConfig(**{**cfg.to_dict(), "seed": seed}))
        runs.append(m.state_dict()["features.0.weight"])
    plain = train.init_model(models.PRESETS["tiny"], 3)
    train.train(plain, small, TrainConfig(epochs=1, batch_size=128, augment_shift=1, seed=3))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], plain.state_dict()["features.0.weight"])


def test_batched_members_warp_as_their_solo_runs(small):
    train.setup_threads(1)

    def spec(c):
        return Spec(convs=(Conv(c, 5, 1, 2, 2), Conv(6, 3, 1, 2, 1)), hidden=(12,), batch_norm=True)

    cfgs = [
        TrainConfig(epochs=1, batch_size=128, seed=10, rotate_deg=12, elastic_alpha=30),
        TrainConfig(epochs=1, batch_size=128, seed=11, augment_shift=2),
        TrainConfig(
            epochs=1, batch_size=128, seed=12, translate_px=2, shear_deg=8, augment_shift=1
        ),
    ]
    specs = [spec(3), spec(5), spec(4)]
    outs = batched.train_many(specs, small, cfgs)
    for s, c, out in zip(specs, cfgs, outs):
        m = train.init_model(s, c.seed)
        r = train.train(m, small, c)
        sa, sb = m.state_dict(), out.model.state_dict()
        keys = [k for k in sa if "num_batches" not in k]
        dist = sum(float((sa[k] - sb[k]).norm() ** 2) for k in keys) ** 0.5
        assert dist / sum(float(sa[k].norm() ** 2) for k in keys) ** 0.5 < 1e-3
        assert abs(r.history[0].train_loss - out.result.history[0].train_loss) < 1e-4


def test_train_config_validates_and_leaves_defaults_out_of_its_dict():
    assert set(AUGMENT_RANGES) <= set(TrainConfig.__dataclass_fields__)
    assert not set(AUGMENT_RANGES) & set(TrainConfig().to_dict())  # old records and cache keys kept
    d = TrainConfig(rotate_deg=10, elastic_sigma=5).to_dict()
    assert d["rotate_deg"] == 10.0 and d["elastic_sigma"] == 5.0 and "shear_deg" not in d
    assert TrainConfig(**d) == TrainConfig(rotate_deg=10, elastic_sigma=5)
    for key, value in (
        ("rotate_deg", -1),
        ("scale_frac", 0.6),
        ("shear_deg", 50),
        ("translate_px", 15),
        ("elastic_alpha", 101),
        ("elastic_sigma", 0.1),
        ("rotate_deg", float("nan")),
    ):
        with pytest.raises(MincapError, match=key):
            TrainConfig(**{key: value})


def test_cli_accepts_and_validates_the_settings(mnist_root, capsys):
    base = ["train", "--arch", "mlp-32", "--data-dir", str(mnist_root)]
    warp = ["--rotate-deg", "10", "--scale-frac", "0.1", "--shear-deg", "5", "--translate-px", "1.5",
            "--elastic-alpha", "34", "--elastic-sigma", "4"]
    assert main([*base, "--limit", "512", "--epochs", "1", *warp, "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    keys = ("rotate_deg", "scale_frac", "shear_deg", "translate_px", "elastic_alpha")
    assert tuple(cfg[k] for k in keys) == (10.0, 0.1, 5.0, 1.5, 34.0)
    for flag, value in (("--rotate-deg", "181"), ("--elastic-sigma", "0"), ("--scale-frac", "-0.1")):
        rc = main([*base, "--limit", "64", flag, value])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert flag[2:].replace("-", "_") in err


def _ask(cfg):
    from mincap.search.space import sample_trial

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(12):
        t = study.ask()
        out.append((t, sample_trial(t, cfg, (1, 28, 28), 10)[1]))
    return out


def test_study_space_draws_the_ranges_and_is_off_by_default():
    from mincap.search.space import preset_params, sample_trial

    plain = parse_study({"study": {"seeds": ["mlp-32"]}, "space": {"families": ["mlp"]}})
    for t, tc in _ask(plain):
        assert not set(AUGMENT_RANGES) & set(t.params)
        assert aug.Warp.from_config(tc) == aug.Warp()
    assert not set(AUGMENT_RANGES) & set(preset_params("mlp-32", plain))  # same seed dicts
    cfg = parse_study(
        {
            "study": {"seeds": ["mlp-32"]},
            "space": {
                "families": ["mlp"],
                "rotate_deg": [0, 15],
                "elastic_alpha": [0, 40],
                "elastic_sigma": [4, 6],
                "translate_px": [1.5, 1.5],
            },
        }
    )
    draws = _ask(cfg)
    for t, tc in draws:
        assert (
            0 <= tc.rotate_deg <= 15 and 0 <= tc.elastic_alpha <= 40 and 4 <= tc.elastic_sigma <= 6
        )
        assert tc.translate_px == 1.5 and "translate_px" not in t.params  # fixed: not searched
        assert tc.shear_deg == 0 and tc.scale_frac == 0
    assert len({tc.rotate_deg for _, tc in draws}) > 6
    p = preset_params("mlp-32", cfg)
    assert (p["rotate_deg"], p["elastic_alpha"], p["elastic_sigma"]) == (0.0, 0.0, 4.0)
    assert "translate_px" not in p
    tc = sample_trial(optuna.trial.FixedTrial(p), cfg, (1, 28, 28), 10)[1]
    assert (tc.rotate_deg, tc.translate_px) == (0.0, 1.5)


@pytest.mark.parametrize(
    "key,value",
    [
        ("rotate_deg", [0, 200]),
        ("elastic_sigma", [0, 4]),
        ("scale_frac", [0.2, 0.1]),
        ("shear_deg", "x"),
    ],
)
def test_study_space_refuses_bad_ranges_in_one_line(key, value):
    with pytest.raises(MincapError, match=f"space.{key}") as err:
        parse_study({"study": {"seeds": []}, "space": {key: value}})
    assert "\n" not in str(err.value)
