"""Batch-norm re-estimation: a sub-network's statistics are measured on train images, only there."""

from __future__ import annotations

import torch
from oneshot_data import synthetic_splits

from mincap.data import Split, Splits
from mincap.nets.models import prepare
from mincap.oneshot.extract import (
    bn_stats,
    calib_indices,
    calibrated_model,
    extract,
    recalibrate_bn,
)
from mincap.oneshot.space import SubnetConfig
from mincap.oneshot.supernet import Supernet


class _Untouchable:
    """Stands in for the validation tensors: any use at all fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"batch-norm re-estimation read the validation split (.{name})")

    def __getitem__(self, key):
        raise AssertionError("batch-norm re-estimation read the validation split")

    def __len__(self):
        raise AssertionError("batch-norm re-estimation read the validation split")


def test_reestimation_changes_the_statistics_and_reads_only_train_images(tiny_space):
    real = synthetic_splits(n_train=2500)
    splits = Splits(real.name, real.train, Split(_Untouchable(), _Untouchable()), real.n_classes)
    torch.manual_seed(0)
    net = Supernet(tiny_space)
    cfg = SubnetConfig((4, 6, 4), (4, 3, 5, 2, 4, 3))
    model = extract(net, cfg).model()
    fresh = bn_stats(model)
    assert all(torch.equal(m, torch.zeros_like(m)) and torch.equal(v, torch.ones_like(v))
               for m, v in fresh)
    seen: list[torch.Tensor] = []
    hooks = [bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
             for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d)]
    recalibrate_bn(model, splits.train, batch_size=4000)  # the default 2,000 images, in one batch
    for h in hooks:
        h.remove()
    assert len(seen) == 3 and all(s.shape[0] == 2000 for s in seen), "not 2,000 images in one batch"
    for (mean, var), inp, (m0, v0) in zip(bn_stats(model), seen, fresh):
        assert not torch.allclose(mean, m0), "means did not change"
        assert not torch.allclose(var, v0), "variances did not change"
        torch.testing.assert_close(mean, inp.mean((0, 2, 3)))
        torch.testing.assert_close(var, inp.var((0, 2, 3), unbiased=True))
    # The images were those train images: the first batch norm saw exactly the chosen ones.
    idx = calib_indices(len(real.train), 2000, 0)
    with torch.no_grad():
        pre = model.features[0](prepare(real.train.x[idx]))
    torch.testing.assert_close(model.features[1].running_mean, pre.mean((0, 2, 3)))
    # The whole step as a trial runs it (batches of 1,000) touches no validation image either.
    # (Later batch norms normalize by each batch's statistics while calibrating: only the first
    # one's mean is independent of the batch size.)
    again = calibrated_model(net, cfg, splits)
    torch.testing.assert_close(bn_stats(again)[0][0], bn_stats(model)[0][0])
