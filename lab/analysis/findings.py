"""Findings: the claim an experiment tests, its verdict and the numbers behind it.

findings.json (written by `lab analyze`, rendered by `lab report`):
    {"experiment", "title", "claim", "verdict", "summary",
     "findings": [{"claim", "verdict", "evidence", "votes"}],   # sub-claims, each with numbers; votes:
                                                                 # composed into the headline, or beside it
     "tables": [relative paths of Markdown tables], "plots": [relative paths of PNGs],
     "seeds", "preset", "generated_by"}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

VERDICTS = ("supported", "qualified", "refuted", "inconclusive")

# How a reader of REPORT.md should read a verdict: `decide` (stats.py) and `headline` (below), in words.
HOW_TO_READ = (
    "How each verdict is decided, by one rule for every finding (`lab/analysis/stats.py`): a finding "
    "compares per-seed values, with each other or with a stated reference, and takes the 95% confidence "
    "interval of the difference (of a fitted quantity, a bootstrap over seeds). **Supported**: the interval "
    "excludes zero on the claimed side. **Refuted**: it lies wholly on the other side, or inside a margin "
    "stated in advance (any effect is negligible). A claim of no difference is supported only when the "
    "interval lies inside its margin and refuted when it lies wholly outside. **Inconclusive**: anything "
    "else, including an interval that few seeds leave wide. An experiment's verdict composes the verdicts "
    "of the findings that test its claim: all alike gives that verdict; some supporting and some not gives "
    '**qualified**; otherwise refuted if any refutes, else inconclusive. A claim with a condition ("if '
    "routing works, ...\") takes its conclusion's verdict where the condition is supported and is "
    "inconclusive otherwise. Findings marked *beside the claim* (a break that shows why a piece matters, an "
    "aside, this machine's timing) are decided by the same rule and reported, but do not vote. A choice made "
    "after seeing the data (the best setting, the best head) is tested on other seeds or other data."
)


def headline(parts) -> str:
    """One verdict composed from sub-verdicts (strings or `Finding`s), each decided on its own:

    every part the same verdict     -> that verdict;
    otherwise, some part supports
    (supported or qualified)        -> qualified (the parts disagree: the claim holds only in part);
    otherwise, some part refutes    -> refuted (the rest could not decide);
    no parts                        -> inconclusive.
    """
    vs = [p.verdict if isinstance(p, Finding) else p for p in parts]
    bad = [v for v in vs if v not in VERDICTS]
    if bad:
        raise ValueError(f"verdict {bad[0]!r} is not one of {VERDICTS}")
    if not vs:
        return "inconclusive"
    if len(set(vs)) == 1:
        return vs[0]
    if "supported" in vs or "qualified" in vs:
        return "qualified"
    return "refuted" if "refuted" in vs else "inconclusive"


def conditional_headline(condition, conclusion) -> str:
    """The verdict on "if <condition>, <conclusion>" (verdict strings or `Finding`s): the conclusion's verdict
    where the condition is supported, else inconclusive (the conclusion was not tested under its
    condition). A condition is a precondition, not a vote: `headline` would call supported + refuted
    "qualified"."""
    cond, concl = (p.verdict if isinstance(p, Finding) else p for p in (condition, conclusion))
    return concl if cond == "supported" else "inconclusive"


@dataclass
class Finding:
    """One sub-claim, its verdict (decided by lab.analysis.stats.decide or `headline`) and its numbers.
    `votes`: whether the experiment's headline composes this verdict; False for a finding reported beside
    the claim (`beside`), which REPORT.md marks so."""

    claim: str
    verdict: str
    evidence: str
    votes: bool = True

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if not isinstance(self.votes, bool):
            raise ValueError(f"votes {self.votes!r} is not true or false")
        _check_types(self, claim=str, evidence=str)


@dataclass(kw_only=True)
class Findings:
    verdict: str
    summary: str
    findings: list[Finding] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    # Which experiment, its title and claim: filled from the registry's Experiment by `lab.experiment.analyze`
    # (one source for each), so an experiment's own analyze need not repeat them.
    experiment: str = ""
    title: str = ""
    claim: str = ""
    seeds: int = 0
    preset: str = ""
    generated_by: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        text = dict.fromkeys(("summary", "experiment", "title", "claim", "preset", "generated_by"), str)
        _check_types(self, **text, seeds=int, tables=list, plots=list)
        for name in ("tables", "plots"):
            for path in getattr(self, name):
                if not isinstance(path, str):
                    raise ValueError(f"{name} holds {path!r}, not a path")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Findings:
        d = dict(d)
        d["findings"] = [Finding(**f) for f in d.get("findings", [])]
        return cls(**d)


def _check_types(obj, **types) -> None:
    """ValueError unless each named field of `obj` has its type (a bool is no int)."""
    for name, t in types.items():
        v = getattr(obj, name)
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise ValueError(f"{name} {v!r} is not a {t.__name__}")


def beside(finding: Finding) -> Finding:
    """The finding, marked as reported beside the claim: decided by the same rule, not composed into the
    experiment's headline."""
    return replace(finding, votes=False)


def claims_summary(findings) -> str:
    """ "[verdict] claim." for each finding, joined by spaces: a summary that states every sub-verdict."""
    return " ".join(f"[{f.verdict}] {f.claim}." for f in findings)


def evidence_summary(findings) -> str:
    """ "[verdict] claim: evidence." for each finding, joined by spaces: every sub-verdict with its numbers."""
    return " ".join(f"[{f.verdict}] {f.claim}: {f.evidence}." for f in findings)
