import dataclasses
import inspect
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from adaswitch_lib.data import left_pad
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.sampler import SamplerConfig, sample_targets

VOCAB, EOS = 48, 3


def tiny(kind="qwen", layers=1, hidden=32, vocab=VOCAB, seed=0, context=128):
    torch.manual_seed(seed)
    Config, Model = (
        (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen" else (LlamaConfig, LlamaForCausalLM)
    )
    config = Config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=context,
    )
    model = Model(config)
    with torch.no_grad():  # sharper random distributions, so that divergences vary along a sequence
        model.lm_head.weight.mul_(8.0 if kind == "qwen" else 4.0)
    return model.eval()


@pytest.fixture(scope="module", params=["qwen", "llama"])
def pair(request):
    return tiny(request.param, layers=1, hidden=32, seed=1), tiny(
        request.param, layers=2, hidden=64, seed=2
    )


def prompts(batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (batch,), generator=g).tolist()  # mixed lengths: left padding
    return left_pad([torch.randint(4, VOCAB, (n,), generator=g).tolist() for n in lengths])


def _count_held_rows(monkeypatch) -> list[int]:
    """How many rows a decoder holds each time it lets finished ones go (appended per call)."""
    from adaswitch_lib import decoding

    held, original = [], decoding.Decoder.keep_rows
    monkeypatch.setattr(
        decoding.Decoder,
        "keep_rows",
        lambda self, index: (held.append(len(index)), original(self, index))[1],
    )
    return held


def run(method, pair, cfg, seed=0, batch=8, **kw):
    ids, mask = prompts(batch, seed)
    student, teacher = pair
    return sample_targets(
        method, student, teacher, ids, mask, cfg, torch.Generator().manual_seed(seed), **kw
    )


SETTINGS = [  # (K, L, draft_chunk): switch early, late and never
    (1.05, 2, 4),
    (1.05, 2, 1),
    (1.5, 4, 16),
    (2.5, 6, 5),
    (math.inf, 3, 8),
]


@pytest.mark.parametrize("k, window, chunk", SETTINGS)
@pytest.mark.parametrize("greedy", [True, False])
def test_fast_adaswitch_equals_token_by_token_reference(pair, k, window, chunk, greedy):
    temps = (
        dict(student_temperature=0.0, teacher_temperature=0.0)
        if greedy
        else dict(
            student_temperature=1.0, student_top_p=1.0, teacher_temperature=0.7, teacher_top_p=0.9
        )
    )
    cfg = SamplerConfig(
        max_new_tokens=40,
        adaswitch_k=k,
        adaswitch_window=window,
        draft_chunk=chunk,
        eos_token_id=EOS,
        teacher_continuation="exact",
        **temps,
    )
    for seed in range(3):
        fast, ref = run("adaswitch", pair, cfg, seed), run("adaswitch_reference", pair, cfg, seed)
        assert torch.equal(fast.sequences, ref.sequences)
        assert torch.equal(fast.response_mask, ref.response_mask)
        assert torch.equal(fast.stats["switch_index"], ref.stats["switch_index"])
        assert torch.allclose(
            fast.stats["d_at_switch"], ref.stats["d_at_switch"], rtol=1e-4, equal_nan=True
        )
        switched = fast.stats["switched"]
        assert (fast.stats["switch_index"][switched] > window).all()
        assert (
            fast.stats["switch_index"][switched] <= fast.stats["response_length"][switched]
        ).all()
        if k == math.inf:
            assert not switched.any()


@pytest.mark.parametrize("k, window, chunk", SETTINGS[:4])
def test_speculative_continuation_keeps_the_exact_exploration(pair, k, window, chunk):
    """Up to and including the switch token, speculative continuation writes what the reference
    writes."""
    cfg = SamplerConfig(
        max_new_tokens=40,
        adaswitch_k=k,
        adaswitch_window=window,
        draft_chunk=chunk,
        eos_token_id=EOS,
        teacher_continuation="speculative",
        student_temperature=1.0,
        student_top_p=1.0,
        teacher_temperature=0.7,
        teacher_top_p=0.9,
    )
    for seed in range(3):
        fast, ref = run("adaswitch", pair, cfg, seed), run("adaswitch_reference", pair, cfg, seed)
        assert torch.equal(fast.stats["switch_index"], ref.stats["switch_index"])
        for row in range(fast.sequences.shape[0]):
            i = int(ref.stats["switch_index"][row])
            n = i if i > 0 else int(ref.stats["response_length"][row])
            assert torch.equal(fast.responses[row, :n], ref.responses[row, :n])
        switched = fast.stats["switched"]
        assert (fast.stats["continuation_accepted"] <= fast.stats["continuation_drafted"]).all()
        assert (fast.stats["continuation_drafted"][~switched] == 0).all()


SKD_SETTINGS = [  # (rule, k or p, draft_chunk, greedy): rejections rare, frequent, everywhere
    ("top_k", 6, 8, False),
    ("top_k", 2, 4, False),
    ("top_k", 1, 16, False),
    ("top_k", 3, 1, False),
    ("top_p", 0.5, 5, False),
    ("top_k", 2, 8, True),
]


@pytest.mark.parametrize("rule, size, chunk, greedy", SKD_SETTINGS)
def test_skd_draft_verify_equals_token_by_token_reference(pair, rule, size, chunk, greedy):
    temps = (
        dict(student_temperature=0.0, teacher_temperature=0.0)
        if greedy
        else dict(
            student_temperature=1.0, student_top_p=1.0, teacher_temperature=0.7, teacher_top_p=0.9
        )
    )
    cfg = SamplerConfig(
        max_new_tokens=40,
        skd_rule=rule,
        skd_top_k=size if rule == "top_k" else 25,
        skd_top_p=size if rule == "top_p" else 0.5,
        draft_chunk=chunk,
        eos_token_id=EOS,
        keep_teacher_logits=True,
        **temps,
    )
    replaced = []
    for seed in range(3):
        fast, ref = run("skd", pair, cfg, seed), run("skd_reference", pair, cfg, seed)
        assert torch.equal(fast.sequences, ref.sequences)
        assert torch.equal(fast.response_mask, ref.response_mask)
        assert torch.equal(fast.stats["replaced_tokens"], ref.stats["replaced_tokens"])
        m = fast.response_mask.bool()
        assert torch.allclose(fast.teacher_logits[m], ref.teacher_logits[m], atol=1e-4)
        replaced.append(fast.stats["replaced_tokens"])
    replaced = torch.cat(replaced)
    # rows reject at different points: they advance apart
    assert replaced.float().std() > 0 or greedy


def test_speculative_continuation_samples_the_teacher_distribution():
    """Sequence frequencies of speculative continuation match the exact probabilities
    q(y0) p(y1 | y0) p(y2 | y0 y1) (the switch fires at i = 2 in every row); a residual step
    that samples the wrong distribution fails the same bound."""
    import adaswitch_lib.sampler as sampler_module

    vocab, n, draws = 6, 3, 6000
    student, teacher = tiny(vocab=vocab, seed=3), tiny(layers=2, hidden=64, vocab=vocab, seed=4)
    for model, scale in ((student, 0.25), (teacher, 0.3)):  # unsharpen: every token has some mass
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)
    prompt = torch.tensor([[1, 4, 2]])
    cfg = SamplerConfig(
        max_new_tokens=n,
        adaswitch_k=1e-9,
        adaswitch_window=1,
        student_temperature=1.0,
        student_top_p=1.0,
        teacher_temperature=1.0,
        teacher_top_p=1.0,
        eos_token_id=None,
        teacher_continuation="speculative",
        continuation_draft="student_warp",
    )
    ids, mask = prompt.expand(draws, -1), torch.ones(draws, 3, dtype=torch.long)
    # exact probabilities of every sequence
    seqs = torch.cartesian_prod(*[torch.arange(vocab)] * n)
    full = torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    with torch.no_grad():
        s_logp = torch.log_softmax(student(full).logits[:, 2], -1).gather(1, seqs[:, :1])[:, 0]
        t_logp = (
            torch.log_softmax(teacher(full).logits[:, 3:-1], -1)
            .gather(2, seqs[:, 1:, None])[..., 0]
            .sum(1)
        )
    expected = (s_logp + t_logp).exp() * draws

    def statistic():
        t = sample_targets(
            "adaswitch", student, teacher, ids, mask, cfg, torch.Generator().manual_seed(7)
        )
        assert (t.stats["switch_index"] == 2).all()
        code = (t.responses * vocab ** torch.arange(n - 1, -1, -1)).sum(1)
        observed = torch.bincount(code, minlength=vocab**n).float()
        big = expected >= 5  # chi-square over the well-filled cells, the rest pooled
        o = torch.cat([observed[big], observed[~big].sum()[None]]) if (~big).any() else observed
        e = torch.cat([expected[big], expected[~big].sum()[None]]) if (~big).any() else expected
        return float(((o - e) ** 2 / e).sum()), len(o) - 1, t.stats

    chi2, dof, stats = statistic()
    drafted, accepted = stats["continuation_drafted"].sum(), stats["continuation_accepted"].sum()
    assert 0 < accepted < drafted  # both acceptance and the residual step are exercised
    bound = dof + 5 * math.sqrt(2 * dof)
    assert chi2 < bound, (chi2, dof)
    print(f"chi2 {chi2:.0f} on {dof} dof, acceptance {accepted / drafted:.2f}")
    original = sampler_module.sample_from_probs
    try:  # a wrong residual (uniform) must fail the bound
        sampler_module.sample_from_probs = lambda probs, u: original(torch.ones_like(probs), u)
        wrong, _, _ = statistic()
    finally:
        sampler_module.sample_from_probs = original
    print(f"wrong residual: chi2 {wrong:.0f}")
    assert wrong > bound, (wrong, bound)


@pytest.mark.parametrize(
    "method, continuation", [("skd", "exact"), ("adaswitch", "exact"), ("adaswitch", "speculative")]
)
# switch early, late, never
@pytest.mark.parametrize("k, window", [(1.05, 2), (1.5, 4), (math.inf, 3)])
def test_every_round_advances_every_live_row(pair, method, continuation, k, window):
    """No stall: each teacher pass writes at least one token to every live row, so a batch needs at
    most max_new_tokens teacher passes after the prompt's, and the student drafts at most
    2 x draft_chunk tokens per pass (its adaptive limit), whatever the switch regime."""
    student, teacher = pair
    calls = {"student": 0, "teacher": 0}
    hooks = [
        m.register_forward_hook(
            lambda mod, args, out, who=who: calls.__setitem__(who, calls[who] + 1)
        )
        for m, who in ((student, "student"), (teacher, "teacher"))
    ]
    try:
        n, chunk = 40, 8
        cfg = SamplerConfig(
            max_new_tokens=n,
            adaswitch_k=k,
            adaswitch_window=window,
            draft_chunk=chunk,
            eos_token_id=None,
            teacher_continuation=continuation,
            student_temperature=1.0,
            student_top_p=1.0,
            teacher_temperature=0.7,
            teacher_top_p=0.9,
        )
        t = run(method, pair, cfg, batch=16)
    finally:
        for hook in hooks:
            hook.remove()
    assert (t.stats["response_length"] == n).all()
    assert calls["teacher"] <= 1 + n, calls
    # drafts grow to 2x draft_chunk at most
    assert calls["student"] <= 1 + calls["teacher"] * 2 * chunk, calls


def test_the_settings_cover_early_late_and_no_switches(pair):
    cfg = SamplerConfig(
        max_new_tokens=40, student_temperature=1.0, student_top_p=1.0, eos_token_id=None
    )
    early = run(
        "adaswitch", pair, dataclasses.replace(cfg, adaswitch_k=1.05, adaswitch_window=2), batch=16
    )
    late = run(
        "adaswitch", pair, dataclasses.replace(cfg, adaswitch_k=1.5, adaswitch_window=4), batch=16
    )
    assert (
        early.stats["switched"].float().mean() > 0.8
        and early.stats["switch_index"].float().median() <= 8
    )
    assert (
        late.stats["switched"].any()
        and late.stats["switch_index"][late.stats["switched"]].float().mean() > 10
    )


def test_switch_statistics_agree_in_distribution(pair):
    """Independent draws: fast and reference switch rates and positions agree within sampling
    error."""
    cfg = SamplerConfig(
        max_new_tokens=30,
        student_temperature=1.0,
        student_top_p=1.0,
        adaswitch_k=1.6,
        adaswitch_window=4,
        eos_token_id=EOS,
    )
    fast = [run("adaswitch", pair, cfg, seed=s, batch=64) for s in range(0, 4)]
    ref = [run("adaswitch_reference", pair, cfg, seed=s, batch=64) for s in range(10, 14)]
    rate = lambda ts: torch.cat([t.stats["switched"] for t in ts]).float()
    a, b = rate(fast), rate(ref)
    p = (a.mean() + b.mean()) / 2
    assert 0.05 < p < 0.95
    assert abs(a.mean() - b.mean()) < 4 * math.sqrt(p * (1 - p) * 2 / len(a))


def test_infinite_k_is_plain_student_sampling(pair):
    cfg = SamplerConfig(
        max_new_tokens=30,
        student_temperature=1.0,
        student_top_p=0.9,
        adaswitch_k=math.inf,
        eos_token_id=EOS,
    )
    assert torch.equal(run("adaswitch", pair, cfg).sequences, run("student", pair, cfg).sequences)


def test_skd_limits(pair):
    cfg = SamplerConfig(
        max_new_tokens=30, student_temperature=1.0, student_top_p=1.0, eos_token_id=EOS
    )
    everything = run("skd", pair, dataclasses.replace(cfg, skd_top_k=VOCAB))
    assert torch.equal(everything.sequences, run("student", pair, cfg).sequences)
    assert everything.stats["replaced_tokens"].sum() == 0
    # top-1 acceptance and a greedy teacher: every token is the teacher's choice
    strict = dataclasses.replace(cfg, skd_top_k=1, teacher_temperature=0.0)
    skd = run("skd", pair, strict)
    assert torch.equal(skd.sequences, run("teacher", pair, strict).sequences)
    assert skd.stats["replaced_tokens"].sum() > 0
    assert (skd.stats["replaced_rate"] <= 1).all()
    # the nucleus rule accepts a subset of what it would with p = 1
    nucleus = run("skd", pair, dataclasses.replace(cfg, skd_rule="top_p", skd_top_p=0.3))
    assert nucleus.stats["replaced_tokens"].sum() > 0


def test_eos_before_any_switch_is_never_switched(pair):
    cfg = SamplerConfig(
        max_new_tokens=30,
        student_temperature=0.0,
        teacher_temperature=0.0,
        adaswitch_k=1.01,
        adaswitch_window=4,
    )
    free = run("adaswitch", pair, cfg)
    eos = int(free.responses[0, 2])  # row 0's third token becomes EOS: it ends at i = 3 <= L
    for method in ("adaswitch", "adaswitch_reference"):
        t = run(method, pair, dataclasses.replace(cfg, eos_token_id=eos))
        first_eos = int((t.responses[0] == eos).nonzero()[0])
        assert first_eos <= 2 and not t.stats["switched"][0]
        assert (
            t.stats["response_length"][0] == first_eos + 1
            and t.response_mask[0, first_eos + 1 :].sum() == 0
        )
        assert (t.responses[0, first_eos + 1 :] == cfg.pad_token_id).all()


def test_left_padded_batch_equals_one_prompt_at_a_time(pair):
    cfg = SamplerConfig(
        max_new_tokens=24,
        student_temperature=0.0,
        teacher_temperature=0.0,
        adaswitch_k=1.3,
        adaswitch_window=3,
        eos_token_id=EOS,
    )
    ids, mask = prompts(6, seed=5)
    student, teacher = pair
    for method in ("student", "skd", "adaswitch"):
        batch = sample_targets(method, student, teacher, ids, mask, cfg)
        for row in range(6):
            keep = mask[row].bool()
            alone = sample_targets(
                method, student, teacher, ids[row : row + 1, keep], mask[row : row + 1, keep], cfg
            )
            n = int(alone.stats["response_length"][0])
            assert torch.equal(alone.responses[0, :n], batch.responses[row, :n]), (method, row)
            assert int(batch.stats["response_length"][row]) == n


def test_kept_teacher_logits_match_a_teacher_forced_pass(pair):
    student, teacher = pair
    cfg = SamplerConfig(
        max_new_tokens=20,
        student_temperature=1.0,
        adaswitch_k=1.3,
        adaswitch_window=3,
        eos_token_id=EOS,
        keep_teacher_logits=True,
    )
    for method in ("adaswitch", "skd"):
        t = run(method, pair, cfg)
        positions = (t.attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = teacher(
            input_ids=t.sequences, attention_mask=t.attention_mask, position_ids=positions
        ).logits
        forced = logits[:, t.prompt_length - 1 : -1]
        m = t.response_mask.bool()
        assert torch.allclose(t.teacher_logits[m], forced[m], atol=1e-4)


def test_sampling_builds_no_autograd_graph_even_where_gradients_are_on(pair):
    """A KD step samples with its student in training (grad-enabled) context; a graph kept
    through the decode would cost time and memory and is never used."""
    cfg = SamplerConfig(
        max_new_tokens=12,
        adaswitch_k=1.3,
        adaswitch_window=3,
        eos_token_id=EOS,
        keep_teacher_logits=True,
    )
    with torch.enable_grad():
        for method in ("student", "adaswitch", "skd"):
            t = run(method, pair, cfg)
            assert t.teacher_logits is None or not t.teacher_logits.requires_grad
            for key, value in t.stats.items():
                assert not value.requires_grad, (method, key)


def test_padded_vocabulary_is_sliced_and_a_real_mismatch_is_an_error():
    student, teacher = tiny(vocab=VOCAB), tiny(layers=2, vocab=VOCAB + 16)
    ids, mask = prompts(4)
    with pytest.raises(
        ConfigError, match=r"teacher vocabulary \(64\) and student vocabulary \(48\) differ"
    ):
        sample_targets("adaswitch", student, teacher, ids, mask, SamplerConfig(max_new_tokens=8))
    t = sample_targets(
        "adaswitch", student, teacher, ids, mask, SamplerConfig(max_new_tokens=8, vocab_size=VOCAB)
    )
    assert t.responses.max() < VOCAB
    with pytest.raises(ConfigError, match="cannot both hold"):
        sample_targets(
            "skd",
            student,
            teacher,
            ids,
            mask,
            SamplerConfig(max_new_tokens=8, vocab_size=VOCAB + 16),
        )


def test_bad_input_errors(pair):
    student, teacher = pair
    ids, mask = prompts(3)
    with pytest.raises(
        ConfigError, match=r"adaswitch_window \(L\) = 0 is outside the allowed range \[1, inf\)"
    ):
        SamplerConfig(adaswitch_window=0)
    with pytest.raises(ConfigError, match=r"adaswitch_k \(K\) = 0"):
        SamplerConfig(adaswitch_k=0)
    empty = mask.clone()
    empty[1] = 0
    with pytest.raises(ConfigError, match=r"prompt rows \[1\] are empty"):
        sample_targets("adaswitch", student, teacher, ids, empty, SamplerConfig(max_new_tokens=4))
    with pytest.raises(ConfigError, match="exceeds the model's context of 128 tokens"):
        sample_targets("adaswitch", student, teacher, ids, mask, SamplerConfig(max_new_tokens=125))
    with pytest.raises(ConfigError, match="unknown sampler method 'gkd'"):
        sample_targets("gkd", student, teacher, ids, mask)


def _sorted_nucleus_probs(logits, temperature, top_p):
    """The warped distribution written the plain way: a full sort, the nucleus, normalised."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    ranked, order = probs.sort(dim=-1, descending=True)
    inside = (ranked.cumsum(-1) - ranked) < top_p
    kept = torch.zeros_like(probs).scatter(-1, order, ranked * inside)
    return kept / kept.sum(-1, keepdim=True)


@pytest.mark.parametrize("vocab", [48, 542, 5000])
@pytest.mark.parametrize(
    "temperature, top_p", [(0.2, 0.5), (0.5, 0.5), (1.0, 0.9), (1.0, 0.999), (2.0, 0.3)]
)
def test_top_p_by_top_k_equals_the_full_sort(vocab, temperature, top_p):
    """The nucleus from a growing top-k is the full sort's nucleus, flat rows (which need every
    token) included; samples at the same uniform numbers are the full sort's inverse CDF."""
    from adaswitch_lib.decoding import SamplerConfig as Cfg
    from adaswitch_lib.decoding import sample_from_logits, warped_probs
    from adaswitch_lib.rules import in_acceptance_set

    g = torch.Generator().manual_seed(vocab)
    # flat to sharp
    logits = torch.randn(12, 3, vocab, generator=g) * torch.tensor([0.05, 1.0, 6.0])[None, :, None]
    expected = _sorted_nucleus_probs(logits, temperature, top_p)
    assert torch.equal(warped_probs(logits, temperature, top_p) > 0, expected > 0)
    torch.testing.assert_close(
        warped_probs(logits, temperature, top_p), expected, rtol=1e-6, atol=1e-7
    )
    u = torch.rand(12, 3, generator=g)
    tokens = sample_from_logits(logits, temperature, top_p, u)
    cdf = expected.sort(-1, descending=True)
    index = torch.searchsorted(cdf.values.cumsum(-1), (u * cdf.values.sum(-1))[..., None]).clamp(
        max=vocab - 1
    )
    assert torch.equal(tokens, cdf.indices.gather(-1, index)[..., 0])
    cfg = Cfg(skd_rule="top_p", skd_top_p=top_p, teacher_temperature=temperature)
    ranks = expected.sort(dim=-1, descending=True, stable=True).indices
    # each row's nucleus size: probe both sides of its edge
    size = (expected > 0).sum(-1, keepdim=True)
    for rank in (
        torch.zeros_like(size),
        size - 2,
        size - 1,
        size,
        size + 1,
        torch.randint(0, vocab, size.shape, generator=g),
    ):
        tokens = ranks.gather(-1, rank.clamp(0, vocab - 1))[..., 0]
        assert torch.equal(
            in_acceptance_set(logits, tokens, cfg),
            expected.gather(-1, tokens[..., None])[..., 0] > 0,
        )


def test_draft_length_maximises_tokens_per_cost():
    """Known values of the rule: a draft that is always kept grows to the limit, one never kept
    stays one token; a batch whose rows keep 90 % of their drafts drafts 7 (not 1, as a rule that
    shrinks at any rejection in the batch would give), 50 % drafts 2."""
    from adaswitch_lib.sampler import draft_length

    assert draft_length(1.0, 3.0, 32) == 32
    assert draft_length(0.0, 3.0, 32) == 1
    # 5.217 tokens / 10 units beats g = 6 (4.686 / 9) and 8 (5.695 / 11)
    assert draft_length(0.9, 3.0, 32) == 7
    assert draft_length(0.5, 3.0, 32) == 2  # 1.5 / 5 beats 1 / 4 and 1.75 / 6
    assert draft_length(0.9, 0.0, 32) == 1  # a free teacher pass: verify every token
    assert draft_length(0.99, 3.0, 8) == 8  # the limit holds


@pytest.mark.parametrize(
    "method,continuation", [("skd", "exact"), ("adaswitch", "exact"), ("adaswitch", "speculative")]
)
def test_draft_verify_rows_leave_when_finished_and_change_nothing(
    pair, monkeypatch, method, continuation
):
    """The draft -> verify engine lets finished rows go from both models (SKD, AdaSwitch's exploring
    and lock-step rounds, speculative continuation): every token, statistic and kept logit is what
    the engine writes when it keeps every row to the end."""
    from adaswitch_lib import sampler

    held = _count_held_rows(monkeypatch)
    cfg = SamplerConfig(
        max_new_tokens=40,
        student_temperature=1.0,
        student_top_p=1.0,
        teacher_temperature=0.7,
        teacher_top_p=0.9,
        adaswitch_k=1.5,
        adaswitch_window=3,
        eos_token_id=5,
        keep_teacher_logits=True,
        teacher_continuation=continuation,
    )
    for seed in range(3):
        held.clear()
        fast = run(method, pair, cfg, seed, batch=16)
        assert held and min(held) < 16, (
            "no row left the engine's batch: the test does not exercise it"
        )
        with monkeypatch.context() as keep_all:
            keep_all.setattr(sampler, "_drop_finished", lambda dec, rows, done: rows)
            whole = run(method, pair, cfg, seed, batch=16)
        assert torch.equal(fast.sequences, whole.sequences) and torch.equal(
            fast.response_mask, whole.response_mask
        )
        # a smaller batch may round a float differently, never a token
        for key, value in fast.stats.items():
            same = torch.allclose if value.is_floating_point() else torch.equal
            assert same(value.nan_to_num(-1), whole.stats[key].nan_to_num(-1)), key
        m = fast.response_mask.bool()
        assert torch.allclose(
            fast.teacher_logits[m].float(), whole.teacher_logits[m].float(), atol=1e-4
        )


def test_finished_rows_leave_the_batch_and_change_nothing(pair, monkeypatch):
    """Plain sampling and exact AdaSwitch's teacher-alone tail drop finished rows from the decoder;
    the rows still writing write what they write without it (the token-by-token reference and one
    prompt at a time keep every row), kept teacher logits included."""

    held = _count_held_rows(monkeypatch)
    student, teacher = pair
    eos = 5  # frequent enough that rows end far apart
    cfg = SamplerConfig(
        max_new_tokens=40,
        student_temperature=1.0,
        student_top_p=1.0,
        teacher_temperature=0.7,
        teacher_top_p=0.9,
        adaswitch_k=1.05,
        adaswitch_window=2,
        eos_token_id=eos,
        keep_teacher_logits=True,
    )
    for seed in range(3):
        fast, ref = (
            run("adaswitch", pair, cfg, seed, batch=16),
            run("adaswitch_reference", pair, cfg, seed, batch=16),
        )
        assert torch.equal(fast.sequences, ref.sequences) and torch.equal(
            fast.response_mask, ref.response_mask
        )
        m = fast.response_mask.bool()
        assert torch.allclose(fast.teacher_logits[m], ref.teacher_logits[m], atol=1e-4)
    assert held, "no row ever left the teacher-alone batch: the test does not exercise it"
    held.clear()
    ids, mask = prompts(16, seed=3)
    batch = sample_targets(
        "student",
        student,
        teacher,
        ids,
        mask,
        cfg,
        noise=torch.rand(3, 16, 40, generator=torch.Generator().manual_seed(0)),
    )
    assert held and min(held) < 16
    noise = torch.rand(3, 16, 40, generator=torch.Generator().manual_seed(0))
    for row in range(16):
        keep = mask[row].bool()
        alone = sample_targets(
            "student",
            student,
            teacher,
            ids[row : row + 1, keep],
            mask[row : row + 1, keep],
            cfg,
            noise=noise[:, row : row + 1],
        )
        n = int(alone.stats["response_length"][0])
        assert int(batch.stats["response_length"][row]) == n
        assert torch.equal(alone.responses[0, :n], batch.responses[row, :n]), row


def test_samplers_pass_the_cache_by_the_name_the_model_takes(pair, recwarn):
    """transformers 5 takes the KV cache as `cache` and warns on `past_key_values` (removed in
    5.40): the samplers use whichever name the model's forward has."""
    student, teacher = pair
    cfg = SamplerConfig(max_new_tokens=6, adaswitch_k=1.2, adaswitch_window=2, eos_token_id=EOS)
    for method in ("student", "skd", "adaswitch"):
        run(method, pair, cfg)
    deprecated = [w for w in recwarn if "past_key_values" in str(w.message)]
    assert not deprecated, deprecated[0].message
    from adaswitch_lib.decoding import cache_argument

    names = inspect.signature(student.forward).parameters
    assert cache_argument(student) == ("cache" if "cache" in names else "past_key_values")


@pytest.mark.parametrize(
    "method", ["student", "teacher", "skd", "adaswitch", "adaswitch_reference"]
)
def test_rows_stop_at_any_of_several_eos_ids(pair, method):
    """A model may end a response with any of several ids (Qwen2.5-Instruct: <|im_end|> and
    <|endoftext|>): given a second EOS id, every row ends at its first occurrence of either."""
    base = dict(max_new_tokens=16, adaswitch_k=1.05, adaswitch_window=2, draft_chunk=4)
    greedy = dict(student_temperature=0.0, teacher_temperature=0.0)
    free = run(method, pair, SamplerConfig(**base, **greedy, eos_token_id=EOS))
    # a token every row writes late enough to cut responses short, and not the first EOS
    written = free.responses[0][free.response_mask[0].bool()].tolist()
    second = next(t for t in written[2:] if t != EOS)
    stopped = run(method, pair, SamplerConfig(**base, **greedy, eos_token_id=(EOS, second)))
    for row in range(free.responses.shape[0]):
        full = free.responses[row][free.response_mask[row].bool()].tolist()
        cut = next((i + 1 for i, t in enumerate(full) if t in (EOS, second)), len(full))
        assert stopped.responses[row][stopped.response_mask[row].bool()].tolist() == full[:cut]
    assert int(stopped.response_mask[0].sum()) < int(free.response_mask[0].sum())


def test_stop_token_ids_join_the_tokenizer_and_the_generation_config(pair):
    import types

    from adaswitch_lib.models import stop_token_ids

    student, teacher = pair
    tokenizer = types.SimpleNamespace(eos_token_id=EOS)
    student.generation_config.eos_token_id, teacher.generation_config.eos_token_id = None, None
    assert stop_token_ids(tokenizer, student) == EOS  # one id stays an int
    teacher.generation_config.eos_token_id = [7, EOS]
    assert stop_token_ids(tokenizer, student, teacher) == (EOS, 7)
    teacher.generation_config.eos_token_id = None
