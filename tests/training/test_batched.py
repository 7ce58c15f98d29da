"""Batched training (mincap.training.batched, mincap.training.grouped) gives each trial what training it alone gives.

Tolerance (float32 noise only: grouped convs and stacked matmuls sum in another order):
after 1-2 short epochs on 512 real MNIST images, per trial
    * relative L2 distance of all weights and BN statistics  < 1e-3
    * per-epoch mean training loss                           within 1e-4
    * validation predictions identical on                    >= 99.5% of the 5,000 images
    * validation accuracy                                    within 0.005
Measured on the project's CPU machine: relative distance 2e-7 .. 1.2e-4, max |weight diff|
<= 2.2e-4, loss within 9e-6, predictions 100% identical. A wrong seed, batch order or learning rate misses these by orders of magnitude
(`test_a_wrong_seed_fails_the_tolerance`).
"""

from __future__ import annotations

import pytest
import torch

from mincap.compression.qat import qat_plan
from mincap.data import Split, Splits
from mincap.errors import NonFiniteLoss
from mincap.nets import quant
from mincap.nets.models import Conv, Spec
from mincap.training import batched, grouped
from mincap.training import engine as train


@pytest.fixture
def small(mnist_small):
    s = mnist_small
    return Splits(s.name, Split(s.train.x[:512], s.train.y[:512]), s.val, s.n_classes)


@pytest.fixture(autouse=True)
def _one_thread():
    train.setup_threads(1)


def _cnn(c0, c1, h, bn=True, head="flatten"):
    hidden = (h,) if h else ()
    return Spec(convs=(Conv(c0, 5, 1, 2, 2), Conv(c1, 3, 1, 2, 1)), hidden=hidden, batch_norm=bn, head=head)


def _distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if "num_batches" not in k]
    num = sum(float((sa[k].float() - sb[k].float()).norm() ** 2) for k in keys) ** 0.5
    den = sum(float(sa[k].float().norm() ** 2) for k in keys) ** 0.5
    return num / den


def _solo(spec, splits, cfg):
    m = train.init_model(spec, cfg.seed)
    return m, train.train(m, splits, cfg)


def _check_same(solo_model, solo_res, trained, splits):
    assert trained.error is None
    assert _distance(solo_model, trained.model) < 1e-3
    assert len(trained.result.history) == len(solo_res.history)
    for a, b in zip(solo_res.history, trained.result.history):
        assert abs(a.train_loss - b.train_loss) < 1e-4
        assert abs(a.val_acc - b.val_acc) < 0.005
    _, p1 = train.evaluate(solo_model, splits.val)
    _, p2 = train.evaluate(trained.model, splits.val)
    assert float((p1 == p2).float().mean()) >= 0.995


def test_draw_and_apply_shifts_give_what_shift_gives():
    x = torch.rand(3, 7, 1, 12, 12)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    out = batched._apply_shifts(x, batched._draw_shifts([1, 2, 0], gens, 7), 2)
    ref = [torch.Generator().manual_seed(i) for i in range(3)]
    assert torch.equal(out[0], train._shift(x[0], 1, ref[0]))
    assert torch.equal(out[1], train._shift(x[1], 2, ref[1]))
    assert torch.equal(out[2], x[2])
    # The generators advanced exactly as the solo draws did.
    assert torch.equal(torch.randint(0, 99, (5,), generator=gens[0]), torch.randint(0, 99, (5,), generator=ref[0]))


def test_grouping_by_structure():
    cfg = train.TrainConfig(batch_size=128)
    specs = [_cnn(3, 5, 8), _cnn(6, 2, 20), _cnn(4, 4, 0), _cnn(4, 9, 11), _cnn(4, 9, 11, head="gap")]
    cfgs = [cfg, cfg, cfg, train.TrainConfig(batch_size=256), cfg]
    assert batched.group_trials(specs, cfgs) == [[0, 1], [2], [3], [4]]
    assert grouped.max_spec(specs[:2]) == _cnn(6, 5, 20)
    assert specs[0].structure() == specs[1].structure() != specs[2].structure()
    # With QAT plans, quantizer kinds (per-channel, symmetric) must agree too; bit widths may differ.
    sym, asym = quant.QuantSpec(4), quant.QuantSpec(2, per_channel=False, symmetric=False)
    plans = [([sym, None, sym, sym], 1), ([sym, sym, None, quant.QuantSpec(1)], 0)]
    assert batched.group_trials(specs[:2], cfgs[:2], plans) == [[0, 1]]
    assert batched.group_trials(specs[:2], cfgs[:2], [plans[0], ([asym] * 4, 0)]) == [[0], [1]]


@pytest.mark.parametrize("bn", [True, False])
def test_each_trial_equals_training_it_alone(small, bn):
    # One group: same structure, different widths, learning rates, decay, shifts, seeds, epochs.
    specs = [_cnn(3, 5, 8, bn), _cnn(6, 2, 20, bn), _cnn(4, 9, 11, bn)]
    cfgs = [
        train.TrainConfig(epochs=1, batch_size=128, lr=0.01, weight_decay=1e-4, augment_shift=0, seed=10),
        train.TrainConfig(epochs=2, batch_size=128, lr=0.02, weight_decay=1e-3, augment_shift=1, seed=11),
        train.TrainConfig(epochs=2, batch_size=128, lr=0.03, weight_decay=1e-5, augment_shift=2, seed=12),
    ]
    assert len(batched.group_trials(specs, cfgs)) == 1
    outs = batched.train_many(specs, small, cfgs)
    for spec, cfg, out in zip(specs, cfgs, outs):
        m, r = _solo(spec, small, cfg)
        _check_same(m, r, out, small)
        assert out.model.spec == spec
        assert [tuple(v.shape) for v in out.model.state_dict().values()] == [
            tuple(v.shape) for v in m.state_dict().values()
        ]


def test_gap_head_preset_shapes(small):
    tiny = Spec(convs=(Conv(6, 3, pool=2, pad=1), Conv(12, 3, pool=2, pad=1), Conv(16, 3, pad=1)),
                batch_norm=True, head="gap")
    other = Spec(convs=(Conv(4, 3, pool=2, pad=1), Conv(7, 3, pool=2, pad=1), Conv(9, 3, pad=1)),
                 batch_norm=True, head="gap")
    cfgs = [train.TrainConfig(epochs=1, batch_size=128, seed=1), train.TrainConfig(epochs=1, batch_size=128, seed=2)]
    outs = batched.train_many([tiny, other], small, cfgs)
    for spec, cfg, out in zip([tiny, other], cfgs, outs):
        _check_same(*_solo(spec, small, cfg), out, small)


def test_a_wrong_seed_fails_the_tolerance(small):
    spec = _cnn(4, 6, 10)
    cfg = train.TrainConfig(epochs=1, batch_size=128, lr=0.02, seed=5)
    out = batched.train_many([spec], small, [cfg])[0]
    m, r = _solo(spec, small, cfg)
    _check_same(m, r, out, small)
    m2, _ = _solo(spec, small, train.TrainConfig(epochs=1, batch_size=128, lr=0.02, seed=6))
    assert _distance(m2, out.model) > 0.1
    m3, _ = _solo(spec, small, train.TrainConfig(epochs=1, batch_size=128, lr=0.01, seed=5))
    assert _distance(m3, out.model) > 1e-3


def test_early_stop_leaves_the_group(small):
    specs = [_cnn(3, 5, 8), _cnn(6, 2, 20)]
    cfgs = [train.TrainConfig(epochs=3, batch_size=256, seed=1), train.TrainConfig(epochs=2, batch_size=256, seed=2)]
    seen: list[tuple[int, int]] = []

    def on_epoch(i, stats):
        seen.append((i, stats.epoch))
        return i == 0 and stats.epoch == 1

    outs = batched.train_many(specs, small, cfgs, on_epoch=on_epoch)
    assert sorted(seen) == [(0, 1), (1, 1), (1, 2)]
    assert outs[0].result.stopped_early and len(outs[0].result.history) == 1
    assert not outs[1].result.stopped_early and len(outs[1].result.history) == 2
    model, result = outs[1]
    assert result.val_acc == pytest.approx(train.evaluate(model, small.val)[0])


def test_non_finite_loss_ends_only_that_trial(small):
    specs = [_cnn(3, 5, 8, bn=False), _cnn(3, 5, 8, bn=False)]
    cfgs = [train.TrainConfig(epochs=1, batch_size=128, lr=1e30, seed=1),
            train.TrainConfig(epochs=1, batch_size=128, lr=0.01, seed=2)]
    outs = batched.train_many(specs, small, cfgs)
    assert isinstance(outs[0].error, NonFiniteLoss) and "loss became" in str(outs[0].error)
    assert outs[1].error is None and outs[1].result.val_acc > 0.1


def test_qat_phase_equals_train_compressed_first_phase(small):
    """Fake quantization from each trial's switch epoch, per-trial bit widths (1-bit and float layers too).

    Looser tolerance: a weight near a rounding boundary may take the neighbouring code.
    Measured: relative distance ~1e-4, predictions >= 99.6% identical.
    """
    from mincap.config import CompressConfig

    specs = [_cnn(3, 5, 8), _cnn(6, 2, 20), _cnn(4, 9, 11), _cnn(5, 4, 9)]
    cfgs = [train.TrainConfig(epochs=2, batch_size=128, seed=10 + i, lr=0.01 * (i + 1), augment_shift=0)
            for i in range(4)]
    # Trials 0, 1 and 3 share a group (symmetric per-channel, different bits and switch epochs);
    # trial 2 (asymmetric per-layer, 1-bit and float layers) gets its own.
    comps = [CompressConfig(bits_per_layer=(4, 3, 2, 8), qat_epochs=1),
             CompressConfig(bits_per_layer=(1, 2, 6, 5), qat_epochs=2),
             CompressConfig(bits_per_layer=(1, 3, 0, 4), qat_epochs=1, per_channel=False, symmetric=False),
             CompressConfig(bits=3, qat_epochs=1)]
    plans = [qat_plan(s, c, k) for s, c, k in zip(specs, cfgs, comps)]
    outs = batched.train_many(specs, small, cfgs, quant=plans)
    for spec, cfg, comp, (qs, switch), out in zip(specs, cfgs, comps, plans, outs):
        m = train.init_model(spec, cfg.seed)
        quant.attach_fake_quant(m, qs, enabled=cfg.epochs <= comp.qat_epochs)
        r = train.train(m, small, cfg, on_epoch_start=lambda e, mm, s=switch: quant.set_fake_quant(mm, e >= s))
        _, p1 = train.evaluate(m, small.val)
        quant.detach_fake_quant(m)
        assert _distance(m, out.model) < 5e-3
        for a, b in zip(r.history, out.result.history):
            assert abs(a.val_acc - b.val_acc) < 0.005
        quant.attach_fake_quant(out.model, qs, enabled=True)
        _, p2 = train.evaluate(out.model, small.val)
        assert float((p1 == p2).float().mean()) >= 0.99


def test_train_compressed_continues_from_the_batched_phase(small):
    """`train_compressed(pretrained=train_many(...)[i])` = `train_compressed` alone: pruning, export, decode.

    Same tolerance as the QAT phase: final widths equal, decoded val accuracy within 0.01,
    artifact size within 2%. An untrained model passed as `pretrained` is used as given
    (chance accuracy), so the check cannot pass by training again from scratch.
    """
    from mincap.compression.qat import train_compressed
    from mincap.config import CompressConfig

    specs = [_cnn(6, 8, 16), _cnn(4, 10, 12)]
    cfgs = [train.TrainConfig(epochs=2, batch_size=64, seed=20 + i, lr=0.01, augment_shift=0) for i in range(2)]
    comps = [CompressConfig(bits=4, qat_epochs=1, prune_ratio=0.25, prune_finetune_epochs=1),
             CompressConfig(bits_per_layer=(3, 4, 5, 6), qat_epochs=1)]
    outs = batched.train_many(specs, small, cfgs, quant=[qat_plan(*a) for a in zip(specs, cfgs, comps)])
    for spec, cfg, comp, out in zip(specs, cfgs, comps, outs):
        alone = train_compressed(spec, small, cfg, comp)
        cont = train_compressed(spec, small, cfg, comp, pretrained=out)
        assert cont.spec == alone.spec
        assert abs(cont.val_acc - alone.val_acc) < 0.01 and cont.val_acc > 0.5
        assert abs(cont.size["artifact_bits"] - alone.size["artifact_bits"]) <= 0.02 * alone.size["artifact_bits"]
        assert cont.history[:2] == out.result.history and len(cont.history) == len(alone.history)
        assert cont.train_time_s >= out.result.train_time_s
    blank = train_compressed(specs[1], small, cfgs[1], comps[1],
                             pretrained=(train.init_model(specs[1], 0), train.TrainResult()))
    assert blank.val_acc < 0.3 and blank.history == []
