from pathlib import Path

from mincap.report import fmt_acc, fmt_bits, render, spec_short, train_table

GOLDEN = Path(__file__).parent / "golden"


def test_train_table_golden():
    out = {
        "dataset": "mnist", "n_params": 2668, "n_train": 55000, "n_val": 5000, "epochs": 20,
        "val_acc": 0.9912, "test_acc": 0.99, "train_time_s": 261.04, "device": "cpu",
    }
    assert render(train_table(out), width=80) == (GOLDEN / "train_table.txt").read_text()


def test_formatters():
    assert fmt_acc(0.99123) == "99.12%" and fmt_acc(None) == "-"
    assert fmt_bits(15999.6) == "16,000" and fmt_bits(None) == "-"


def test_spec_short():
    assert spec_short('{"family":"mlp","hidden":[32]}') == "fc 32"
    assert spec_short(None) == "-"
    assert spec_short('{"family":"cnn","convs":[[4,5,2,1,1]],"head":"flatten"}', [8, 4]) == (
        "conv 4x5s2, flatten; bits 8/4")
    sep = '{"family":"cnn","convs":[[8,3,1,2,0],[16,3,1,1,0,1],[16,3,1,1,0,0]],"head":"gap"}'
    assert spec_short(sep) == "conv 8x3/p2 16x3sep 16x3, gap"
