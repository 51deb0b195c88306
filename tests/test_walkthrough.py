"""The walkthrough's engine: the recomputed divergences tell the same story as the sampler."""

import math

import pytest

from adaswitch_lib.walkthrough import coloured_html, load_pair, plot_trace, trace


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return load_pair("smoke", "tiny-qwen", "synth_gsm", tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("example", range(4))
def test_trace_follows_the_switch_rule(pair, example):
    teacher, student, tokenizer, examples = pair
    K, L = 1.1, 2  # small enough that the barely trained smoke pair switches
    t = trace(
        "smoke",
        "tiny-qwen",
        "synth_gsm",
        teacher,
        student,
        tokenizer,
        examples[example],
        K,
        L,
        seed=example,
    )
    n = len(t["tokens"])
    assert n == len(t["d"]) == len(t["who"]) == len(t["threshold"]) and n > 0
    assert all(math.isnan(x) for x in t["threshold"][:L])
    s = t["switch"] if t["switch"] is not None else n
    # before the switch no position fires; at the switch d_i crosses K * mean of the previous L
    for i in range(L, s):
        assert t["d"][i] <= t["threshold"][i] + 1e-4, (i, t["d"][i], t["threshold"][i])
    if t["switch"] is not None:
        assert t["d"][s] > t["threshold"][s] - 1e-4
        assert t["d"][s] == pytest.approx(t["sampler_d_at_switch"], rel=1e-3, abs=1e-4)
    assert t["who"] == ["student"] * s + ["teacher"] * (n - s)


def test_some_prompt_switches_and_the_views_render(pair):
    teacher, student, tokenizer, examples = pair
    traces = [
        trace("smoke", "tiny-qwen", "synth_gsm", teacher, student, tokenizer, e, 1.1, 2)
        for e in examples[:6]
    ]
    assert any(t["switch"] is not None for t in traces)
    t = next(t for t in traces if t["switch"] is not None)
    assert coloured_html(t).count("<span") == len(t["tokens"]) and "#f9cb9c" in coloured_html(t)
    assert plot_trace(t).get_title().startswith("switch at token")
