"""The one verdict rule and the headline rule, on made-up per-seed data whose right verdict is known."""

import numpy as np
import pytest

from lab.analysis import Finding, compare, compare_to, conditional_headline, decide, headline

BASE = np.array([1.00, 1.01, 0.99, 1.00, 1.02])


def noisy(shift, sd, n=5, seed=0):
    return BASE[:n] + shift + np.random.default_rng(seed).normal(0.0, sd, n)


def test_a_clear_effect_supports_the_claim_in_its_direction_and_refutes_the_opposite():
    c = compare(BASE, noisy(-0.5, 0.01))  # b is clearly lower
    assert c.ci95[1] < 0
    assert c.verdict("less") == "supported"
    assert c.verdict("greater") == "refuted"  # an effect against the predicted direction
    assert c.verdict("equal", margin=0.05) == "refuted"  # the interval lies wholly outside ±0.05


def test_no_effect_with_a_wide_interval_decides_nothing():
    c = compare(BASE[:3], noisy(0.0, 0.5, n=3, seed=1))
    lo, hi = c.ci95
    assert lo < -0.05 and hi > 0.05  # wide: neither inside the margin nor excluding zero
    for direction in ("less", "greater"):
        assert c.verdict(direction) == "inconclusive"
        assert c.verdict(direction, margin=0.05) == "inconclusive"
    assert c.verdict("equal", margin=0.05) == "inconclusive"  # a failed difference test is not equality


def test_no_effect_with_a_tight_interval_inside_the_margin_is_equality_and_refutes_a_direction():
    a = np.array([1.000, 1.001, 0.999, 1.0005, 0.9995])
    c = compare(a, a + np.array([0.001, -0.001, 0.0, 0.0005, -0.0005]))
    lo, hi = c.ci95
    assert -0.01 < lo < 0 < hi < 0.01
    assert c.verdict("equal", margin=0.01) == "supported"
    assert c.verdict("less", margin=0.01) == "refuted"  # any effect is negligible
    assert c.verdict("less") == "inconclusive"  # with no margin stated, nothing is negligible


def test_the_rule_on_interval_edges():
    assert decide((0.1, 0.2), "greater") == "supported"
    assert decide((-0.2, -0.1), "greater") == "refuted"
    assert decide((-0.1, 0.2), "greater") == "inconclusive"
    assert decide((0.001, 0.002), "greater", margin=0.01) == "refuted"  # real but negligible
    assert decide((0.001, 0.02), "greater", margin=0.01) == "supported"
    assert decide((0.02, 0.03), "equal", margin=0.01) == "refuted"
    assert decide((0.005, 0.03), "equal", margin=0.01) == "inconclusive"
    assert decide((float("nan"), float("nan")), "less") == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        decide((0.0, 0.1), "equal")
    with pytest.raises(ValueError, match="direction"):
        decide((0.0, 0.1), "smaller")


def test_too_few_finite_seeds_are_inconclusive_and_say_so():
    c = compare([1.0, float("nan"), float("nan")], [2.0, 2.1, 2.2])
    assert c.verdict("greater") == "inconclusive"
    assert "no CI" in c.fmt()


def test_paired_and_reference_comparisons():
    before = np.array([1.0, 5.0, 9.0])
    after = before + np.array([0.10, 0.11, 0.09])
    assert compare(before, after).verdict("greater") == "inconclusive"  # seeds differ a lot
    assert compare(before, after, paired_by_seed=True).verdict("greater") == "supported"
    c = compare_to([2.0, 2.1, 1.9], 2.773)  # e.g. a loss against chance
    assert c.diff == pytest.approx(2.0 - 2.773) and c.verdict("less") == "supported"


def test_fmt_shows_difference_interval_and_p():
    c = compare(BASE, noisy(-0.5, 0.01))
    text = c.fmt()
    assert text.startswith(f"Δ {c.diff:+.3f} [95% CI {c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], p=")
    assert "p=" not in c.fmt(p=False)


@pytest.mark.parametrize(
    "parts,want",
    [
        (["supported", "supported"], "supported"),
        (["refuted", "refuted"], "refuted"),
        (["inconclusive", "inconclusive"], "inconclusive"),
        (["supported", "refuted"], "qualified"),
        (["supported", "inconclusive"], "qualified"),
        (["qualified", "supported"], "qualified"),
        (["refuted", "inconclusive"], "refuted"),
        ([], "inconclusive"),
    ],
)
def test_headline_is_qualified_only_when_parts_disagree(parts, want):
    assert headline(parts) == want
    assert headline([Finding("c", v, "e") for v in parts]) == want


def test_headline_refuses_unknown_verdicts():
    with pytest.raises(ValueError, match="not one of"):
        headline(["supported", "maybe"])


def test_claims_summary_states_every_sub_verdict_in_order():
    from lab.analysis.findings import claims_summary

    parts = [Finding("A holds", "supported", "x"), Finding("B holds", "refuted", "y")]
    assert claims_summary(parts) == "[supported] A holds. [refuted] B holds."
    assert claims_summary([]) == ""


@pytest.mark.parametrize(
    "condition, conclusion, want",
    [
        ("supported", "refuted", "refuted"),  # headline would call this pair qualified
        ("supported", "supported", "supported"),
        ("supported", "inconclusive", "inconclusive"),
        ("qualified", "supported", "inconclusive"),  # the condition does not hold: the conclusion is untested
        ("refuted", "refuted", "inconclusive"),
        ("inconclusive", "supported", "inconclusive"),
    ],
)
def test_a_conditional_claim_takes_its_conclusions_verdict_only_under_its_condition(
    condition, conclusion, want
):
    assert conditional_headline(condition, conclusion) == want
    assert conditional_headline(Finding("c", condition, "e"), Finding("d", conclusion, "e")) == want
