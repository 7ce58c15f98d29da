"""The supernet: its sub-networks, extracted as ordinary mincap networks, compute what it does."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from oneshot_data import synthetic_splits

from mincap.errors import MincapError
from mincap.nets.models import PRESETS, build, prepare
from mincap.oneshot.extract import bn_stats, extract, recalibrate_bn
from mincap.oneshot.space import SubnetConfig, SupernetSpace
from mincap.oneshot.supernet import Supernet, _importance, sort_channels

CONFIGS = [
    SubnetConfig((4, 6, 6)),  # the largest, float
    SubnetConfig((2, 4), (3, 2, 5, 4)),  # depth 2: the other head
    SubnetConfig((4, 2, 6), (5, 4, 3, 2, 2, 5)),
    SubnetConfig((2, 6, 4), (2, 2, 2, 2, 2, 2)),
]


def _net(space, seed=0):
    torch.manual_seed(seed)
    net = Supernet(space)
    with torch.no_grad():  # batch norm's affine parameters away from 1 / 0, so slicing them matters
        for blk in net.blocks:
            blk["bn"].weight.uniform_(0.5, 1.5)
            blk["bn"].bias.uniform_(-0.2, 0.2)
    return net


@pytest.mark.parametrize("head", ["gap", "flatten"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"w{c.widths}-b{c.bits}")
def test_extracted_subnet_gives_the_supernets_logits(tiny_space, cfg, head):
    tiny_space = replace(tiny_space, head=head)
    net = _net(tiny_space)
    x = prepare(synthetic_splits().train.x[:64])
    net.train()
    ours = net(x, cfg)  # batch statistics; the steps start here (stored)
    model = extract(net, cfg).model()
    model.train()
    assert torch.equal(ours, model(x)), "batch-statistics logits differ"
    recalibrate_bn(model, synthetic_splits().train, n_images=300, batch_size=300)
    model.eval()
    net.eval()
    ours = net(x, cfg, bn_stats=bn_stats(model))
    assert torch.equal(ours, model(x)), "re-estimated-statistics logits differ"


def test_extracted_subnet_is_an_ordinary_network(tiny_space):
    cfg = CONFIGS[2]
    sub = extract(_net(tiny_space), cfg)
    model = build(sub.spec)
    model.load_state_dict(sub.state)  # a plain mincap network: strict load, no extra keys
    assert sub.spec.n_weight_layers() == len(cfg.bits) == len(sub.log_steps)
    assert [c.channels for c in sub.spec.convs] == list(cfg.widths)


def test_the_default_space_holds_the_studies_99_percent_presets():
    space = SupernetSpace()
    for name, width in (("sep-1.8k", 16), ("sep-2.4k", 20)):
        cfg = SubnetConfig((8, width, width, width, width), (4,) * 10)
        space.check(cfg)
        assert space.spec(cfg) == PRESETS[name]


def test_configs_outside_the_space_are_refused(tiny_space):
    for bad in (SubnetConfig((3, 4)), SubnetConfig((2,)), SubnetConfig((2, 4), (3, 3, 3)),
                SubnetConfig((2, 4), (6, 2, 2, 2)), SubnetConfig((2, 4, 4, 4))):
        with pytest.raises(MincapError):
            tiny_space.check(bad)
    with pytest.raises(MincapError, match="grid"):
        SupernetSpace(widths=(4, 23), width_step=2)


def test_each_width_has_its_own_step_and_extraction_leaves_the_table_alone(tiny_space):
    net = _net(tiny_space)
    x = prepare(synthetic_splits().train.x[:32])
    net.train()
    net(x, SubnetConfig((4, 6), (4, 4, 4, 4)))
    before = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("steps.")}
    ready = net.steps_ready()
    assert ready == 4  # one entry per layer at (its width, 4 bits)
    narrow = extract(net, SubnetConfig((2, 2), (4, 4, 4, 4)))  # fresh MSE steps, not stored
    assert net.steps_ready() == ready
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    wide = extract(net, SubnetConfig((4, 6), (4, 4, 4, 4)))
    assert not torch.equal(narrow.log_steps[0], wide.log_steps[0])


def test_a_flatten_heads_slice_is_whole_channels_of_every_position(tiny_space):
    space = replace(tiny_space, head="flatten")
    net = _net(space)
    cfg = CONFIGS[1]  # depth 2: a 3 x 3 feature map in the 12 x 12 space (depth 3 leaves 1 x 1)
    hw = space.head_positions(cfg.depth)
    assert hw > 1 and net.heads[cfg.depth - space.depth[0]].in_features == space.max_width(cfg.depth - 1) * hw
    head_w = net.layers(cfg)[-1][0]
    assert head_w.shape == (space.n_classes, cfg.widths[-1] * hw)
    assert extract(net, cfg).spec.head == "flatten"


@pytest.mark.parametrize("head", ["gap", "flatten"])
def test_sort_keeps_the_largest_network_and_puts_important_channels_first(tiny_space, head):
    tiny_space = replace(tiny_space, head=head)
    net = _net(tiny_space, seed=3)
    x = prepare(synthetic_splits().train.x[:64])
    net.train()
    big = tiny_space.largest()
    before = net(x, big)
    perms = sort_channels(net)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms)  # something moved
    torch.testing.assert_close(net(x, big), before, rtol=1e-5, atol=1e-5)
    small = SubnetConfig((2, 4, 2))
    if head == "flatten":  # a narrower slice after sorting is another function: the head moved with it
        sub = extract(net, small).model()
        sub.train()
        assert torch.equal(net(x, small), sub(x))
    for g in range(len(net.blocks)):
        imp = _importance(net, g).detach()
        assert torch.all(imp[:-1] >= imp[1:]), f"block {g} is not sorted"
    net(x, SubnetConfig((2, 2), (3, 3, 3, 3)))  # learned steps now exist
    with pytest.raises(RuntimeError, match="learned steps"):
        sort_channels(net)
