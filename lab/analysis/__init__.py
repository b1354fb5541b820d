"""The analysis toolkit, NumPy only: seed statistics, the one verdict rule, findings, Markdown tables.

Every experiment's `analyze` uses these instead of writing its own:
    summarize(values, left_out)          mean ± sd over seeds; non-finite (diverged) or marked values are
                                         counted apart, never averaged: "2.310 ± 0.020 (1/3 diverged)"
    compare(a, b) / compare_to(x, ref)   difference, 95% CI, Welch (or paired) p; .verdict(direction,
                                         margin) by the written rule in lab.analysis.stats; .fmt()
    contrast(groups, weights)            a weighted sum of group means (e.g. a difference of differences)
                                         with its Welch-Satterthwaite CI, decided by the same rule
    held_out_choice(values)              a best setting chosen on other seeds: per seed, the setting best on
                                         the rest, and its value at that seed (convention 15)
    headline(parts)                      one verdict from sub-findings (qualified only when they disagree)
    conditional_headline(cond, concl)    the verdict on "if cond, concl": concl's where cond is supported
    Finding, Findings                    what findings.json holds
    beside(finding)                      the finding reported beside the claim: decided, not composed
    Table, Outputs                       Markdown tables (every cell escaped), the record of plots and tables
    cell, escape, code                   a table cell made safe (\\x07, \\n, \\|); that escaping; a code span
"""

from lab.analysis.findings import (
    HOW_TO_READ,
    VERDICTS,
    Finding,
    Findings,
    beside,
    conditional_headline,
    headline,
)
from lab.analysis.stats import Comparison, compare, compare_to, contrast, decide, held_out_choice, summarize
from lab.analysis.tables import Outputs, Table, cell, code, escape

__all__ = [
    "HOW_TO_READ",
    "VERDICTS",
    "Comparison",
    "Finding",
    "Findings",
    "Outputs",
    "Table",
    "beside",
    "cell",
    "code",
    "compare",
    "compare_to",
    "contrast",
    "decide",
    "escape",
    "conditional_headline",
    "headline",
    "held_out_choice",
    "summarize",
]
