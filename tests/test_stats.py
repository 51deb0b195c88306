"""Paired differences, Holm's correction, verdicts and the seeds a gap needs (stats.py), and the
claims' verdicts built on them: one seed never decides a claim."""

import pandas as pd
import pytest

from adaswitch_lib import claims
from adaswitch_lib.config import get_profile
from adaswitch_lib.stats import holm, paired_difference, seeds_needed, verdict


def test_a_paired_difference_has_the_t_interval_and_p_value():
    # per-seed differences 2, 2, 3: mean 7/3, sd 1/sqrt(3), se 1/3, t(0.975, 2) = 4.3027
    d = paired_difference({0: 3.0, 1: 4.0, 2: 5.0, 9: 1.0}, {0: 1.0, 1: 2.0, 2: 2.0})
    assert d.n == 3 and d.mean == pytest.approx(7 / 3)
    assert (d.low, d.high) == pytest.approx((7 / 3 - 4.302653 / 3, 7 / 3 + 4.302653 / 3))
    assert d.p == pytest.approx(0.019804, abs=1e-5)  # t = 7 on 2 degrees of freedom
    assert verdict(d) == "holds"
    flipped = paired_difference({0: 1.0, 1: 2.0, 2: 2.0}, {0: 3.0, 1: 4.0, 2: 5.0})
    assert verdict(flipped) == "does not hold"
    noisy = paired_difference({0: 3.0, 1: 0.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 2.0})
    assert noisy.low < 0 < noisy.high and verdict(noisy) == "not resolved"
    with pytest.raises(ValueError, match="not paired"):
        paired_difference({0: 1.0}, {1: 1.0})


def test_one_seed_never_decides():
    d = paired_difference({0: 10.0}, {0: 90.0})
    assert (d.low, d.high, d.p, d.n) == (None, None, None, 1)
    assert verdict(d) == "not resolved (one seed)"
    assert "[" not in d.text()


def test_holm_adjusts_in_the_input_order():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    d = paired_difference({0: 3.0, 1: 4.0, 2: 5.0}, {0: 1.0, 1: 2.0, 2: 2.0})
    assert verdict(d, p=holm([d.p] * 6)[0]) == "not resolved"  # 6 x 0.0198 > 0.05


def test_seeds_needed_matches_the_power_tables():
    # a paired t-test at effect size 1 (gap = sd), 5 % two-sided, 80 % power: n = 10 (Cohen)
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(2.0, 1.0) == 34  # effect 0.5
    assert seeds_needed(1.0, -1.0) == 10  # a gap in either direction
    assert seeds_needed(1.0, 0.0) is None and seeds_needed(1e6, 1.0, most=50) is None


def _records(scores: dict) -> claims.Records:
    """A Records view over a Table 1 long frame: {(method, column): [score per seed]}."""
    rows = [
        dict(pair="Qwen", column=column, method=method, seed=seed, score=score)
        for (method, column), values in scores.items()
        for seed, score in enumerate(values)
    ]
    records = claims.Records.__new__(claims.Records)
    records.profile, records.n_test = get_profile("smoke"), 400
    records.long, records.pairs = pd.DataFrame(rows), ["Qwen"]
    return records


@pytest.mark.parametrize("seeds", [1, 3])
def test_claims_a_and_b_take_their_verdicts_from_paired_seeds(seeds):
    """AdaSwitch far behind SFT on GSM and on-policy far behind off-policy: one seed says "not
    resolved (one seed)", never "does not hold"; three consistent seeds say "does not hold"."""

    def s(*values):
        return list(values[:seeds])

    records = _records(
        {
            ("AdaSwitch", "GSM"): s(40.0, 41.0, 43.0),
            ("SFT", "GSM"): s(60.0, 62.0, 63.0),
            ("On-policy KD", "GSM"): s(30.0, 31.5, 33.0),
            ("Off-policy KD", "GSM"): s(50.0, 50.5, 52.0),
            ("Off-policy KD", "SUMM"): s(20.0, 21.0, 22.0),
            ("On-policy KD", "SUMM"): s(10.0, 10.5, 12.0),
        }
    )
    [(where, ours, a)] = list(claims.adaswitch_best_on_gsm(records))
    b = {where: v for where, _, v in claims.on_policy_wins_gsm_off_policy_summ(records)}
    assert where == "Qwen GSM" and "closest other (SFT)" in ours and "(n = %d)" % seeds in ours
    assert "the paper's gap +2.20" in ours
    if seeds == 1:
        assert a == b["Qwen GSM"] == b["Qwen SUMM"] == "not resolved (one seed)"
    else:
        assert a == "does not hold" and b == {"Qwen GSM": "does not hold", "Qwen SUMM": "holds"}
        assert "seeds" in ours.split("at this spread:")[1]


def test_table1_cells_show_the_95_interval_and_n(tmp_path):
    """Table 1 writes mean ± the 95 % t half-width (n) where a cell has seeds, the mean alone where
    it has one, in Markdown and LaTeX, and the half-widths and n as CSV columns."""
    from adaswitch_lib.report import ci_half_widths, write_table

    mean = pd.DataFrame({"Qwen GSM": [50.0, 60.0]}, index=["SFT", "AdaSwitch"])
    std = pd.DataFrame({"Qwen GSM": [float("nan"), 3.0]}, index=mean.index)
    n = pd.DataFrame({"Qwen GSM": [1, 3]}, index=mean.index)
    half = ci_half_widths(std, n)
    assert half.loc["AdaSwitch", "Qwen GSM"] == pytest.approx(4.302653 * 3 / 3**0.5)
    assert half.loc["SFT", "Qwen GSM"] != half.loc["SFT", "Qwen GSM"]  # NaN: one seed
    paths = write_table("table1", mean, half, tmp_path, n=n)
    markdown, latex = paths["md"].read_text(), paths["tex"].read_text()
    assert "| SFT       | 50.00" in markdown and "**60.00 ± 7.45 (3)**" in markdown
    assert r"\textbf{60.00 $\pm$ 7.45 (3)}" in latex
    csv = pd.read_csv(paths["csv"], index_col="method")
    assert csv.loc["AdaSwitch", "Qwen GSM ci95"] == pytest.approx(7.4524, abs=1e-4)
    assert csv.loc["AdaSwitch", "Qwen GSM n"] == 3


def test_cells_against_an_earlier_table_say_which_differences_fall_inside_the_new_interval():
    """New cells 60 ± 7.45 (n = 3) and 50 (one seed) against an earlier 55 and 40: 55 lies
    inside, the one-seed cell has no interval, and a cell the earlier table lacks is left out."""
    from adaswitch_lib.report import cells_against, ci_half_widths

    index = ["SFT", "AdaSwitch", "SKD"]
    mean = pd.DataFrame({"Qwen GSM": [50.0, 60.0, 70.0]}, index=index)
    std = pd.DataFrame({"Qwen GSM": [float("nan"), 3.0, 1.0]}, index=index)
    n = pd.DataFrame({"Qwen GSM": [1, 3, 3]}, index=index)
    earlier = pd.DataFrame({"Qwen GSM": [40.0, 55.0]}, index=["SFT", "AdaSwitch"])
    cells = cells_against(mean, ci_half_widths(std, n), n, earlier).set_index("method")
    assert list(cells.index) == ["SFT", "AdaSwitch"]
    assert cells.loc["AdaSwitch", "difference"] == 5.0 and cells.loc["AdaSwitch", "inside"] == "yes"
    assert cells.loc["SFT", "inside"] == "n/a" and cells.loc["SFT", "n"] == 1
    far = cells_against(mean, ci_half_widths(std, n), n, earlier + 10.0).set_index("method")
    assert far.loc["AdaSwitch", "inside"] == "yes"  # |60 - 65| = 5 <= 7.45
    farther = cells_against(mean, ci_half_widths(std, n), n, earlier - 10.0).set_index("method")
    assert farther.loc["AdaSwitch", "inside"] == "no"  # |60 - 45| = 15 > 7.45


def test_claims_give_the_test_samples_own_interval_from_per_question_scores():
    """Two runs of one seed answered the same 4 questions: the per-question differences (100, 0,
    100, 0) give the test sample's own interval beside the seeds' verdict."""
    records = _records({("On-policy KD", "GSM"): [50.0], ("Off-policy KD", "GSM"): [0.0]})
    records.long["examples"] = [[100.0, 0.0, 100.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    [(where, ours, v)] = list(claims.on_policy_wins_gsm_off_policy_summ(records))
    # mean 50, sd 57.74, se 28.87, t(0.975, 3) = 3.1824: 50 ± 91.87
    assert "test sample alone (seed 0): +50.00 [-41.87, +141.87] over 4 questions" in ours
    assert v == "not resolved (one seed)"


def test_verdicts_of_two_settings_side_by_side():
    """Two settings' claims: the verdicts that agree, one that flips, and a row only one side has
    (it disagrees: a claim measured on one setting only is not shown to agree)."""
    first = [
        dict(claim="a", where="Qwen GSM", verdict="holds"),
        dict(claim="b", where="Qwen GSM", verdict="not resolved"),
        dict(claim="b", where="Qwen SUMM", verdict="holds"),
    ]
    second = [
        dict(claim="a", where="Qwen GSM", verdict="holds"),
        dict(claim="b", where="Qwen GSM", verdict="does not hold"),
    ]
    both = claims.verdicts_side_by_side(first, second).set_index(["claim", "where"])
    assert list(both["same"]) == [True, False, False]
    assert both.loc[("b", "Qwen GSM"), "verdict (other)"] == "does not hold"
    assert both.loc[("b", "Qwen SUMM"), "verdict (other)"] == "no record"
