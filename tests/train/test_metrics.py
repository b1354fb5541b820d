"""JSONL metrics: non-finite values survive the round trip, torn lines from a kill are handled."""

import math

import pytest

from lab.errors import DataError
from lab.train.metrics import MetricsWriter, read_rows, truncate_after


def test_round_trip_with_nonfinite(tmp_path):
    p = tmp_path / "m.jsonl"
    with MetricsWriter(p) as w:
        w.write([{"step": 1, "member": 0, "loss": float("nan"), "grad_norm": float("inf"), "val_loss": 2.5}])
    (row,) = read_rows(p)
    assert math.isnan(row["loss"]) and row["grad_norm"] == math.inf and row["val_loss"] == 2.5


def test_torn_last_line_is_ignored_but_torn_middle_line_is_an_error(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "member": 0, "loss": 1.0}\n{"step": 2, "mem')
    assert [r["step"] for r in read_rows(p)] == [1]
    p.write_text('{"step": 1, "mem\n{"step": 2, "member": 0}\n')
    with pytest.raises(DataError, match=r"m.jsonl:1: corrupted"):
        read_rows(p)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b'{"step": 1, "member": 0}\n\xff\n', "is not valid UTF-8 (corrupted)"),
        (
            b'{"step": 1, "member": 0}\n5\n{"step": 2}\n',
            "m.jsonl:2: corrupted metrics row (not a JSON object)",
        ),
        (
            b'{"step": 1, "val_loss": "abc"}\n',
            "m.jsonl:1: corrupted metrics row (val_loss='abc' is not a number)",
        ),
        (b'{"step": -1, "member": 0}\n', "(step=-1 is not a whole number >= 0)"),
        (b'{"step": 1, "member": true}\n', "(member=True is not a whole number >= 0)"),
        (b'{"member": 0, "loss": 1.0}\n', "m.jsonl:1: corrupted metrics row (no step)"),
    ],
)
def test_a_damaged_metrics_file_is_one_error_for_reading_and_for_resuming(tmp_path, content, fragment):
    p = tmp_path / "m.jsonl"
    p.write_bytes(content)
    for read in (read_rows, lambda p: truncate_after(p, 1)):  # analysis reads; a resumed run cuts back
        with pytest.raises(DataError, match="pass --fresh") as e:
            read(p)
        assert fragment in str(e.value) and "\n" not in str(e.value)
    assert p.read_bytes() == content  # nothing rewritten


def test_truncate_after_keeps_rows_up_to_step(tmp_path):
    p = tmp_path / "m.jsonl"
    with MetricsWriter(p) as w:
        w.write([{"step": s, "member": 0} for s in (0, 10, 20, 30)])
    with open(p, "a") as f:
        f.write('{"step": 40, "memb')  # as a kill mid-write leaves it
    truncate_after(p, 20)
    assert [r["step"] for r in read_rows(p)] == [0, 10, 20]
    assert p.read_text().endswith("\n")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "nope.jsonl")
