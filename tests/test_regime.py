"""The regime check (regime.py): a dip below the start, a late drift and a final crowding either
end each fail their condition, measured on the seed-mean curve."""

import pandas as pd

from adaswitch_lib.regime import TOLERANCES, check_curves


def _curve(*seeds):
    """(seed, step, score) rows: each seed's scores at steps 0, 100, ..., 500."""
    return pd.DataFrame(
        [
            dict(seed=seed, step=100 * i, score=score)
            for seed, scores in enumerate(seeds)
            for i, score in enumerate(scores)
        ]
    )


def test_a_smooth_climb_that_flattens_meets_every_condition():
    curve = _curve([20, 30, 40, 48, 50, 51], [20, 28, 42, 47, 51, 52], [20, 32, 41, 49, 52, 50])
    row = check_curves(curve, 51.0, 20.0, 90.0, TOLERANCES["gsm"])
    assert row["seeds"] == 3 and row["dip"] == 0.0 and row["back_at"] == 0
    # the last 20 % of 500 steps: steps 400 and 500, seed means 51.0 and 51.0
    assert row["late_move"] == 0.0
    assert row["no_collapse"] and row["converged"] and row["room"]


def test_a_collapse_a_late_climb_and_no_room_each_fail():
    curve = _curve([20, 8, 12, 30, 40, 60], [20, 10, 14, 28, 42, 58])
    row = check_curves(curve, 59.0, 20.0, 62.0, TOLERANCES["gsm"])
    assert row["dip"] == 11.0 and not row["no_collapse"]  # seed mean 20 -> 9
    assert row["lowest_at"] == 100 and row["back_at"] == 300  # seed mean 29 at step 300
    never = check_curves(_curve([20, 8, 12, 15, 18, 19]), 19.0, 20.0, 62.0, TOLERANCES["gsm"])
    assert never["back_at"] is None
    assert row["late_move"] == 18.0 and not row["converged"]  # 41 -> 59
    assert row["room"] is False  # 59 is within 5 points of the teacher's 62
    unknown = check_curves(curve, 59.0, None, 62.0, TOLERANCES["gsm"])
    assert unknown["room"] is None


def test_summarisation_is_held_to_rouge_points():
    curve = _curve([16, 60, 80, 84, 85.5, 86.4])
    row = check_curves(curve, 86.0, 16.0, 91.0, TOLERANCES["summ"])
    assert row["late_move"] == 0.9 and row["converged"]
    assert not check_curves(
        _curve([16, 60, 80, 84, 85, 86.5]), 86.0, 16.0, 91.0, TOLERANCES["summ"]
    )["converged"]
