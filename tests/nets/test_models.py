import pytest
import torch

from mincap.errors import MincapError
from mincap.nets import models
from mincap.nets.models import Conv, Spec, parse_arch


def test_pytorch_example_has_21840_params():
    assert models.count_params(models.build(models.PRESETS["pytorch-example-2016"])) == 21840


def test_lenet5_params():
    assert models.count_params(models.build(models.PRESETS["lenet5"])) == 61706


def test_tiny_is_tiny():
    n = models.count_params(models.build(models.PRESETS["tiny"]))
    assert 2000 <= n <= 3000


def test_teacher_preset_size_matches_its_comment():
    assert models.count_params(models.build(models.PRESETS["teacher"])) == 218586


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_presets_roundtrip_and_run(name):
    spec = models.PRESETS[name]
    text = spec.to_json()
    assert Spec.from_json(text) == spec
    assert len(text) < 200
    out = models.build(spec)(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10)


def test_roundtrip_nondefault_fields():
    spec = Spec(
        family="cnn", convs=(Conv(4, 5, 2, 1, 2), Conv(8, 3)), hidden=(16, 12), activation="gelu",
        batch_norm=True, head="flatten", dropout=0.1, in_shape=(1, 14, 14), n_classes=4,
    )
    again = Spec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    assert models.build(again)(torch.rand(2, 1, 14, 14)).shape == (2, 4)


def test_mlp_spec():
    spec = Spec(family="mlp", hidden=(20,), in_shape=(1, 8, 8))
    assert models.count_params(models.build(spec)) == 64 * 20 + 20 + 20 * 10 + 10


@pytest.mark.parametrize(
    "text,msg",
    [
        ('{"family":"rnn"}', "family"),
        ('{"family":"cnn","oops":1}', "unknown field"),
        ('{"family":"cnn","convs":[[8,29,1,1,0]]}', "leaves no pixels"),
        ("{not json", "not valid JSON"),
        ('{"family":"mlp","activation":"swish"}', "activation"),
    ],
)
def test_bad_specs(text, msg):
    with pytest.raises(MincapError, match=msg):
        models.parse_arch(text)


def test_parse_arch_unknown_name():
    with pytest.raises(MincapError, match="neither a preset"):
        models.parse_arch("resnet9000")


@pytest.mark.parametrize("text,says", [
    ('{"family":"cnn","convs":[["a",3,1,1,1]]}', "conv 0 channels must be whole numbers, got 'a'"),
    ('{"family":"cnn","convs":[[8,3]]}', "conv 0 must be [channels, kernel, stride, pool, pad] or with a sixth"),
    ('{"family":"cnn","convs":[[8,3,1,true,1]]}', "conv 0 pool must be whole numbers, got True"),
    ('{"family":"mlp","hidden":[4.5]}', "hidden must be whole numbers, got 4.5"),
    ('{"family":"mlp","hidden":[8],"in_shape":[28,28]}', "in_shape must be [channels, height, width]"),
])
def test_bad_arch_fields_are_one_clear_line(text, says):
    with pytest.raises(MincapError) as err:
        parse_arch(text)
    assert says in str(err.value) and "\n" not in str(err.value)
