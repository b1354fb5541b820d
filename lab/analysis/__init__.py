"""The analysis toolkit, NumPy only: seed statistics, the one verdict rule, findings, Markdown tables.

Every experiment's `analyze` uses these instead of writing its own:
    summarize(values)                    mean ± sd over seeds (non-finite values counted apart)
    compare(a, b) / compare_to(x, ref)   difference, 95% CI, Welch (or paired) p; .verdict(direction,
                                         margin) by the written rule in lab.analysis.stats; .fmt()
    headline(parts)                      one verdict from sub-findings (qualified only when they disagree)
    Finding, Findings                    what findings.json holds
    Table, Outputs, cell                 Markdown tables, the record of written plots and tables
"""

from lab.analysis.findings import VERDICTS, Finding, Findings, headline
from lab.analysis.stats import Comparison, compare, compare_to, decide, summarize
from lab.analysis.tables import Outputs, Table, cell

__all__ = [
    "VERDICTS",
    "Comparison",
    "Finding",
    "Findings",
    "Outputs",
    "Table",
    "cell",
    "compare",
    "compare_to",
    "decide",
    "headline",
    "summarize",
]
