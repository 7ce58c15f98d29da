from pathlib import Path

from mincap.report import fmt_acc, fmt_bits, render, train_table

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
