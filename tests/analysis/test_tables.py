"""Markdown tables and the outputs record."""

import pytest

from lab.analysis import Outputs, Table, cell, code, escape


def test_table_renders_title_note_header_rows_and_after():
    t = Table("Loss", ["variant", "val loss"], note="3 seeds.", after="Lower is better.")
    t.add("intact", "2.738 ± 0.004").add("zero_v", "2.8")
    assert t.render() == (
        "### Loss\n\n3 seeds.\n\n| variant | val loss |\n|---|---|\n| intact | 2.738 ± 0.004 |\n"
        "| zero_v | 2.8 |\n\nLower is better.\n"
    )
    with pytest.raises(ValueError, match="2 columns, got a row of 3"):
        t.add("a", "b", "c")


def test_cell_escapes_control_characters_backslashes_and_pipes():
    assert cell("a|b`c\nd\x07") == "a\\|b`c\\nd\\x07"
    assert cell("\x00\t\r\x1b\x7f\x85\x9f\u200b") == "\\x00\\t\\r\\x1b\\x7f\\x85\\x9f\\u200b"  # C0, DEL, C1
    # a backslash before an n reads apart from a newline
    assert cell("a\\nb") == "a\\\\nb" and escape("a\\nb\n") == "a\\\\nb\\n"
    assert cell("é ü ± — ⏎ �") == "é ü ± — ⏎ �" and cell(3.5) == "3.5"  # printable text kept
    assert code("a`b\x07") == "`a'b\x07`"  # a code span; its text is escaped where it is used


def test_every_cell_of_a_table_is_escaped_and_keeps_its_row_on_one_line():
    t = Table("Samples", ["name", "text|raw"])
    t.add("bell", "ding\x07dong").add("lines", "one\ntwo\r\nthree\tfour").add("c1", "\x85\x9b|x")
    t.add("code", code("a|b`c\x00"))
    lines = t.render().splitlines()
    assert lines[2] == "| name | text\\|raw |"
    rows = lines[4:]
    assert rows == [
        "| bell | ding\\x07dong |",
        "| lines | one\\ntwo\\r\\nthree\\tfour |",
        "| c1 | \\x85\\x9b\\|x |",
        "| code | `a\\|b'c\\x00` |",
    ]
    control = [c for c in t.render() if c != "\n" and not (c.isprintable() or c == " ")]
    assert control == []


def test_outputs_writes_tables_and_records_plots_once(tmp_path):
    outs = Outputs(tmp_path)
    t = Table("T", ["a"]).add("1")
    path = outs.table("t.md", t, "footnote\n")
    assert path.read_text() == t.render() + "\nfootnote\n"
    assert outs.plot("x.png") == tmp_path / "plots" / "x.png"
    outs.plot("x.png")
    f = outs.findings("supported", "s", [])
    assert f.tables == ["tables/t.md"] and f.plots == ["plots/x.png"]
