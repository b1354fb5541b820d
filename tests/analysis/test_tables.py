"""Markdown tables and the outputs record."""

import pytest

from lab.analysis import Outputs, Table, cell


def test_table_renders_title_note_header_rows_and_after():
    t = Table("Loss", ["variant", "val loss"], note="3 seeds.", after="Lower is better.")
    t.add("intact", "2.738 ± 0.004").add("zero_v", "2.8")
    assert t.render() == (
        "### Loss\n\n3 seeds.\n\n| variant | val loss |\n|---|---|\n| intact | 2.738 ± 0.004 |\n"
        "| zero_v | 2.8 |\n\nLower is better.\n"
    )
    with pytest.raises(ValueError, match="2 columns, got a row of 3"):
        t.add("a", "b", "c")


def test_cell_defuses_table_syntax_and_control_characters():
    assert cell("a|b`c\nd\x07") == "a¦b'c⏎d\\x07"


def test_outputs_writes_tables_and_records_plots_once(tmp_path):
    outs = Outputs(tmp_path)
    t = Table("T", ["a"]).add("1")
    path = outs.table("t.md", t, "footnote\n")
    assert path.read_text() == t.render() + "\nfootnote\n"
    assert outs.plot("x.png") == tmp_path / "plots" / "x.png"
    outs.plot("x.png")
    f = outs.findings("supported", "s", [])
    assert f.tables == ["tables/t.md"] and f.plots == ["plots/x.png"]
