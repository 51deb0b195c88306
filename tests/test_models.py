import json
import math
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from adaswitch_lib import atomic, models
from adaswitch_lib import prepare as train
from adaswitch_lib.config import get_profile
from adaswitch_lib.data import format_completion, format_prompt, load_profile_task, load_task
from adaswitch_lib.errors import ConfigError, DataUnavailableError
from adaswitch_lib.sampler import shared_vocab_size
from adaswitch_lib.synth import solution_operations

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def tokenizer():
    examples = load_task("synth_gsm", "train", synth_config=SMOKE.synth)
    return models.train_tokenizer([format_prompt(e) + format_completion(e) for e in examples], 512)


@pytest.mark.parametrize("kind", ["tiny-qwen", "tiny-llama"])
def test_tiny_pair_round_trip(tmp_path, tokenizer, kind):
    model = models.tiny_model(kind, SMOKE.teacher_shape, tokenizer).eval()
    (
        model.save_pretrained(tmp_path / "model"),
        models.save_tokenizer(tokenizer, tmp_path / "tokenizer"),
    )
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    auto_tok = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    file_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer" / "tokenizer.json")
    )
    # beside a qwen2 config it would be swapped
    with pytest.raises(ValueError, match="folder of its own"):
        models.save_tokenizer(tokenizer, tmp_path / "model")
    text = "Question: Mia has 62 cards. Mia gets 9 more.\nAnswer: 62 + 9 = 71\n#### 71"
    ids = tokenizer(text)["input_ids"]
    # no pre-tokenizer swapped in
    assert auto_tok(text)["input_ids"] == ids == file_tok(text)["input_ids"]
    # one digit per token, the space kept with it
    assert "Ġ7" in tokenizer.convert_ids_to_tokens(ids)
    assert auto_tok.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    assert (auto_tok.pad_token, auto_tok.eos_token) == ("<pad>", "<eos>")


def test_hub_code_path_with_a_local_folder_and_offline_error(tmp_path, tokenizer, monkeypatch):
    model = models.tiny_model("tiny-llama", SMOKE.student_shape, tokenizer)
    (
        model.save_pretrained(tmp_path / "model"),
        models.save_tokenizer(tokenizer, tmp_path / "tokenizer"),
    )
    # the same call the Hub ids go through
    loaded = models.load_model(str(tmp_path / "model"), dtype="auto")
    assert loaded.dtype == torch.float32 and not loaded.training
    assert models.load_tokenizer(str(tmp_path / "tokenizer")).eos_token == "<eos>"
    assert models.hub_ids("qwen") == ("Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-0.5B")
    assert models.hub_ids("llama", instruct=True) == (
        "meta-llama/Llama-3.2-3B-Instruct",
        "meta-llama/Llama-3.2-1B-Instruct",
    )
    monkeypatch.setattr(models, "hub_unreachable", lambda: True)
    with pytest.raises(
        DataUnavailableError,
        match="Qwen/Qwen2.5-0.5B: the Hugging Face Hub is unreachable; use a tiny pair",
    ):
        models.load_model("Qwen/Qwen2.5-0.5B")


def test_vocabulary_padding_rows_and_mismatch():
    small, big = (
        types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=v)) for v in (151936, 152064)
    )
    assert shared_vocab_size(small, big, tokenizer_size=151665) == 151665
    with pytest.raises(
        ConfigError, match=r"teacher vocabulary \(152064\) and student vocabulary \(151936\) differ"
    ):
        shared_vocab_size(small, big)
    other = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=32000))
    with pytest.raises(ConfigError, match="do not share a vocabulary"):
        shared_vocab_size(other, big, tokenizer_size=151665)


def test_prepare_trains_once_caches_and_never_uses_a_partial_folder(tmp_path, monkeypatch):
    profile = get_profile("smoke", teacher_steps=20)
    calls = []
    real_sft = train.supervised_finetune
    monkeypatch.setattr(
        train, "supervised_finetune", lambda *a, **k: calls.append(1) or real_sft(*a, **k)
    )
    # a crash while writing leaves no folder a later call could mistake for a finished one
    monkeypatch.setattr(
        train, "evaluate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed"))
    )
    with pytest.raises(RuntimeError, match="killed"):
        train.prepare_pair(profile, "tiny-qwen", "synth_gsm", cache_root=tmp_path)
    assert not any(p.name.startswith("tiny-qwen") for p in (tmp_path / "smoke").iterdir())
    monkeypatch.undo()
    monkeypatch.setattr(
        train, "supervised_finetune", lambda *a, **k: calls.append(1) or real_sft(*a, **k)
    )
    calls.clear()
    folder = train.prepare_pair(profile, "tiny-qwen", "synth_gsm", cache_root=tmp_path)
    assert len(calls) == 2 and atomic.is_complete(folder)  # teacher SFT + student warm start
    report = json.loads((folder / "metrics.json").read_text())
    first_val, best_val = (
        report["teacher_sft"]["val_loss"][0][1],
        report["teacher_sft"]["best_val_loss"],
    )
    assert best_val < 0.8 * first_val  # teacher SFT lowers the validation loss
    assert 0 <= report["teacher_score"] <= 100 and 0 <= report["student_score"] <= 100
    calls.clear()
    assert (
        train.prepare_pair(profile, "tiny-qwen", "synth_gsm", cache_root=tmp_path) == folder
        and not calls
    )
    teacher, student, tok = train.load_prepared(folder)
    assert teacher.num_parameters() > 2 * student.num_parameters()
    assert teacher.config.vocab_size == student.config.vocab_size == len(tok)
    assert not list(folder.glob(".*tmp*"))
    # a changed field that shapes the models gives another folder
    assert (
        train.pair_key(get_profile("smoke", teacher_steps=21), "tiny-qwen", "synth_gsm")
        != folder.name
    )
    # a field only another task uses does not retrain this task's pair
    assert (
        train.pair_key(
            get_profile(
                "smoke", teacher_steps=20, student_warmup_steps_summ=9, max_new_tokens_summ=9
            ),
            "tiny-qwen",
            "synth_gsm",
        )
        == folder.name
    )
    summ = get_profile("smoke", student_warmup_steps_summ=3)
    assert train.pair_key(summ, "tiny-qwen", "synth_summ") == train.pair_key(
        get_profile("smoke", student_warmup_steps_summ=3, student_warmup_steps=50),
        "tiny-qwen",
        "synth_summ",
    )


@pytest.mark.parametrize("kind", ["tiny-qwen", "tiny-llama"])
def test_sft_with_eager_attention_trains_the_same_weights_and_restores_sdpa(tokenizer, kind):
    """On CPU preparation trains teachers with eager attention (faster there): the same training
    up to rounding, and the model keeps its own (SDPA) attention for everything after."""
    assert train.sft_attention("cpu") == "eager" and train.sft_attention("cuda") is None
    examples = load_task("synth_gsm", "train", synth_config=SMOKE.synth)[:48]
    pairs = [
        (tokenizer(format_prompt(e))["input_ids"], tokenizer(format_completion(e))["input_ids"])
        for e in examples
    ]
    weights = {}
    for attention in (None, "eager"):
        model = models.tiny_model(kind, SMOKE.teacher_shape, tokenizer, seed=5)
        own = model.config._attn_implementation
        used = []
        model.model.layers[0].self_attn.register_forward_hook(
            lambda module, args, out: used.append(module.config._attn_implementation)
        )
        train.supervised_finetune(
            model,
            pairs[:32],
            pairs[32:],
            6,
            3e-3,
            8,
            tokenizer.pad_token_id,
            eval_every=3,
            attention=attention,
        )
        assert set(used) == {attention or own}
        assert model.config._attn_implementation == own == "sdpa"
        weights[attention] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(weights[None], weights["eager"], atol=1e-4)
    start = torch.cat(
        [
            p.detach().flatten()
            for p in models.tiny_model(kind, SMOKE.teacher_shape, tokenizer, seed=5).parameters()
        ]
    )
    assert (
        weights[None] - start
    ).abs().max() > 1e-3  # the steps moved the weights: the comparison has power


@pytest.mark.parametrize("kind", ["tiny-qwen", "tiny-llama"])
def test_sft_loss_on_response_positions_and_length_groups_match_the_models_own_loss(
    tokenizer, kind
):
    """`response_nll` (the head on response positions only) is the model's own causal-LM loss, value
    and gradient; SFT over length-sorted groups trains the same weights as whole batches up to
    rounding."""
    examples = load_task("synth_gsm", "train", synth_config=SMOKE.synth)[:48]
    pairs = [
        (tokenizer(format_prompt(e))["input_ids"], tokenizer(format_completion(e))["input_ids"])
        for e in examples
    ]
    model = models.tiny_model(kind, SMOKE.teacher_shape, tokenizer, seed=5)
    batch = train.collate(pairs[:8], tokenizer.pad_token_id, "cpu")
    own = model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2]).loss
    own_grad = torch.autograd.grad(own, list(model.parameters()))
    ours, count = train.response_nll(
        model, batch, normaliser=float((batch[2][:, 1:] != -100).sum())
    )
    assert count == sum(len(r) for _, r in pairs[:8])
    torch.testing.assert_close(ours, own, atol=1e-6, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, list(model.parameters())), own_grad):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    groups = train.length_sorted_groups(pairs[:10], 3)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert sorted(map(str, sum(groups, []))) == sorted(map(str, pairs[:10]))
    sizes = [len(p) + len(r) for g in groups for p, r in g]
    assert sizes == sorted(sizes)
    weights = {}
    for groups in (1, 2):
        model = models.tiny_model(kind, SMOKE.teacher_shape, tokenizer, seed=5)
        history = train.supervised_finetune(
            model,
            pairs[:32],
            pairs[32:],
            6,
            3e-3,
            8,
            tokenizer.pad_token_id,
            eval_every=3,
            length_groups=groups,
        )
        weights[groups] = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert history["best_step"] > 0
    assert torch.allclose(weights[1], weights[2], atol=1e-4)
    start = torch.cat(
        [
            p.detach().flatten()
            for p in models.tiny_model(kind, SMOKE.teacher_shape, tokenizer, seed=5).parameters()
        ]
    )
    assert (
        weights[1] - start
    ).abs().max() > 1e-3  # the steps moved the weights: the comparison has power


def _changed_share(before: dict, model) -> float:
    """The share of non-embedding weights a training run changed."""
    changed = total = 0
    for name, value in model.state_dict().items():
        if "embed" in name or "lm_head" in name:
            continue
        changed += int((value.float() != before[name].float()).sum())
        total += value.numel()
    return changed / total


def test_fine_tuning_keeps_fp32_master_weights(tmp_path, tokenizer):
    """A Hub-style checkpoint under a bf16 profile is fine-tuned over fp32 master weights with a
    bf16 forward: a few lr-1e-5 steps change (nearly) every weight, as fp32 training does, where
    pure-bf16 AdamW rounds most updates away."""
    folder, student_folder = tmp_path / "teacher", tmp_path / "student"
    models.tiny_model("tiny-qwen", SMOKE.teacher_shape, tokenizer, seed=3).save_pretrained(folder)
    models.save_tokenizer(tokenizer, student_folder)  # the Hub path reads the student's tokenizer
    models.tiny_model("tiny-qwen", SMOKE.student_shape, tokenizer, seed=4).save_pretrained(
        student_folder
    )
    profile = get_profile(
        "smoke",
        pairs=("qwen",),
        figure_pairs=(),
        teacher_model=str(folder),
        student_model=str(student_folder),
        dtype="bfloat16",
        train_bf16=True,
        dropout=0.1,
    )
    train_examples = load_task("synth_gsm", "train", synth_config=SMOKE.synth)[:48]
    _, teacher, student = train._initial_models(profile, "qwen", train_examples, "cpu")
    assert next(teacher.parameters()).dtype == torch.float32
    # the profile's dropout reaches Hub checkpoints (it stayed at the checkpoint's 0.0 before)
    assert teacher.config.attention_dropout == student.config.attention_dropout == 0.1
    pairs = [
        (tokenizer(format_prompt(e))["input_ids"], tokenizer(format_completion(e))["input_ids"])
        for e in train_examples
    ]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    autocast = models.training_autocast("cpu", profile.train_bf16)
    train.supervised_finetune(
        teacher,
        pairs[:40],
        pairs[40:],
        4,
        1e-5,
        8,
        tokenizer.pad_token_id,
        warmup_ratio=0.0,
        eval_every=100,
        autocast=autocast,
    )
    assert _changed_share(before, teacher) > 0.95
    # fp16's route (GPUs without bf16, such as Colab's T4): a gradient scaler over the fp32 weights
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    history = train.supervised_finetune(
        teacher,
        pairs[:40],
        pairs[40:],
        4,
        1e-5,
        8,
        tokenizer.pad_token_id,
        warmup_ratio=0.0,
        eval_every=100,
        autocast=torch.float16,
    )
    assert _changed_share(before, teacher) > 0.95 and math.isfinite(history["best_val_loss"])
    with pytest.raises(ValueError, match="fp32 master weights"):
        train.supervised_finetune(teacher.to(torch.bfloat16), pairs[:40], pairs[40:], 1, 1e-5, 8, 0)


def test_training_autocast_per_device():
    assert models.training_autocast("cuda", bf16_supported=True) == torch.bfloat16
    assert (
        models.training_autocast("cuda", bf16_supported=False) == torch.float16
    )  # T4: fp16 + scaler
    assert models.training_autocast("cpu", train_bf16=True) == torch.bfloat16
    assert models.training_autocast("cpu") is None


def _random_pairs(vocab: int, rows: int, prompt: int, response: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, vocab, (prompt,), generator=g).tolist(),
            torch.randint(0, vocab, (response - row,), generator=g).tolist(),
        )
        for row in range(rows)
    ]


def test_validation_losses_scored_in_pieces_equal_scored_whole(monkeypatch, tokenizer):
    """A logits budget of a few positions splits both validation losses into many pieces: the same
    values as one pass over the whole batch, up to float rounding."""
    from adaswitch_lib import evaluate, losses
    from adaswitch_lib.config import RunConfig

    teacher = models.tiny_model("tiny-qwen", SMOKE.teacher_shape, tokenizer, seed=1).eval()
    student = models.tiny_model("tiny-qwen", SMOKE.student_shape, tokenizer, seed=2).eval()
    vocab = len(tokenizer)
    pairs = _random_pairs(vocab, rows=6, prompt=7, response=20)
    run = RunConfig(SMOKE)

    def both():
        return (
            train.validation_nll(teacher, pairs, 0, batch_size=6),
            evaluate.validation_divergence(run, student, teacher, pairs, 0, vocab, batch_size=6),
        )

    whole = both()
    monkeypatch.setattr(losses, "LOGITS_BUDGET_BYTES", 4 * vocab * 25)  # 25 positions at once
    assert losses.positions_within(vocab) == 25
    pieces = both()
    assert pieces == pytest.approx(whole, rel=1e-5)


# Both validation losses at Qwen2.5's vocabulary, 16 rows x 256 response tokens, in a process of
# their own (peak resident memory is per process). Scored whole they peaked at 6.9 GiB
# (docs/gpu.md); in pieces under 2 GiB.
_REAL_VOCAB_VALIDATION = """
import resource, torch
from adaswitch_lib import evaluate, prepare
from adaswitch_lib.config import RunConfig, get_profile
from adaswitch_lib.models import Shape, random_model
torch.set_num_threads(2)
V = 151936
teacher = random_model(Shape(2, 64, 4, 2, 64, V), "qwen", 1).eval()
student = random_model(Shape(2, 32, 4, 2, 64, V), "qwen", 2).eval()
g = torch.Generator().manual_seed(0)
pairs = [(torch.randint(0, V, (100,), generator=g).tolist(),
          torch.randint(0, V, (256,), generator=g).tolist()) for _ in range(16)]
prepare.validation_nll(teacher, pairs, 0, batch_size=16)
evaluate.validation_divergence(RunConfig(get_profile("smoke")), student, teacher, pairs, 0, V, 16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


@pytest.mark.slow
def test_validation_losses_at_the_real_vocabulary_stay_under_2_gib():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REAL_VOCAB_VALIDATION], capture_output=True, text=True, check=True
    )
    peak_gib = float(out.stdout.split()[-1])
    # [16, 256, 151936] fp32 logits alone are 2.3 GiB per model
    assert peak_gib < 2.0, f"peak resident memory {peak_gib:.2f} GiB"


def _saved_bytes(model, ids) -> int:
    """Bytes the forward keeps for the backward pass (what activation memory is)."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids).logits.float().mean().backward()
    return sum(saved)


def test_gradient_checkpointing_trains_the_same_weights_with_fewer_saved_activations(tokenizer):
    """A profile's gradient_checkpointing keeps each layer's input instead of its activations: the
    forward saves a fraction of the bytes, and SFT ends with exactly the weights of a plain run
    (dropout's draws replayed)."""
    shape = get_profile("smoke").teacher_shape
    examples = load_task("synth_gsm", "train", synth_config=SMOKE.synth)[:40]
    pairs = [
        (tokenizer(format_prompt(e))["input_ids"], tokenizer(format_completion(e))["input_ids"])
        for e in examples
    ]
    ids = torch.tensor([pairs[0][0] + pairs[0][1]])
    trained = {}
    for on in (False, True):
        model = models.tiny_model("tiny-qwen", shape, tokenizer, dropout=0.1, seed=5).train()
        models.gradient_checkpointing(model, on)
        trained[on] = _saved_bytes(model, ids)
        model.zero_grad()
        models.gradient_checkpointing(model, False)
        torch.manual_seed(0)
        train.supervised_finetune(
            model, pairs[:32], pairs[32:], 3, 1e-3, 8, tokenizer.pad_token_id, checkpointing=on
        )
        trained[on] = (trained[on], model.state_dict())
    (plain_bytes, plain), (checkpointed_bytes, checkpointed) = trained[False], trained[True]
    assert checkpointed_bytes < 0.5 * plain_bytes, (checkpointed_bytes, plain_bytes)
    assert all(torch.equal(plain[name], checkpointed[name]) for name in plain)


def test_sft_backward_in_head_pieces_gives_the_plain_gradients(monkeypatch, tokenizer):
    """With a logits budget of 7 positions the output head runs in many pieces, each with its own
    backward pass: the loss and every gradient (the tied embedding's too) are those of one pass."""
    from adaswitch_lib import losses

    examples = load_task("synth_gsm", "train", synth_config=SMOKE.synth)[:6]
    pairs = [
        (tokenizer(format_prompt(e))["input_ids"], tokenizer(format_completion(e))["input_ids"])
        for e in examples
    ]
    results = []
    for budget in (None, 4 * len(tokenizer) * 7):
        if budget:
            monkeypatch.setattr(losses, "LOGITS_BUDGET_BYTES", budget)
        model = models.tiny_model("tiny-qwen", SMOKE.teacher_shape, tokenizer, seed=6).train()
        loss = train.sft_backward(model, pairs, tokenizer.pad_token_id, length_groups=2)
        results.append((loss, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain_loss, plain), (pieces_loss, pieces) = results
    assert losses.positions_within(len(tokenizer)) == 7
    assert pieces_loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    for name in plain:
        torch.testing.assert_close(pieces[name], plain[name], rtol=1e-5, atol=1e-7)


def test_lora_teacher_sft_trains_adapters_and_saves_a_plain_checkpoint(tmp_path):
    """teacher_sft = "lora": only the adapters train (the embeddings keep their initial values
    exactly), they are merged into the linear layers' weights, and the saved teacher is a plain
    checkpoint that loads without peft. The route is part of the pair's cache key."""
    profile = get_profile("smoke", teacher_sft="lora", lora_rank=4, teacher_lr=1e-2)
    assert train.pair_key(profile, "tiny-qwen", "synth_gsm") != train.pair_key(
        SMOKE, "tiny-qwen", "synth_gsm"
    )
    folder = train.prepare_pair(profile, "tiny-qwen", "synth_gsm", tmp_path)
    assert not list((folder / "teacher").glob("adapter*"))
    saved = AutoModelForCausalLM.from_pretrained(folder / "teacher").state_dict()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
    initial = models.tiny_model("tiny-qwen", profile.teacher_shape, tokenizer, seed=1).state_dict()
    assert saved.keys() == initial.keys()
    assert torch.equal(saved["model.embed_tokens.weight"], initial["model.embed_tokens.weight"])
    for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        key = f"model.layers.0.{name}.weight"
        assert not torch.equal(saved[key], initial[key]), key
    history = json.loads((folder / "metrics.json").read_text())["teacher_sft"]
    assert history["best_val_loss"] < history["val_loss"][0][1]


def test_a_new_warm_start_reuses_the_teacher_and_equals_a_fresh_preparation(tmp_path, monkeypatch):
    profile = get_profile("smoke", teacher_steps=12)
    first = train.prepare_pair(profile, "tiny-qwen", "synth_gsm", cache_root=tmp_path / "a")
    other = get_profile("smoke", teacher_steps=12, student_warmup_steps=9, student_lr=2e-3)
    assert train.teacher_key(other, "tiny-qwen", "synth_gsm") == train.teacher_key(
        profile, "tiny-qwen", "synth_gsm"
    )
    assert train.pair_key(other, "tiny-qwen", "synth_gsm") != first.name
    calls = []
    real_sft = train.supervised_finetune
    monkeypatch.setattr(
        train, "supervised_finetune", lambda *a, **k: calls.append(a[3]) or real_sft(*a, **k)
    )
    reused = train.prepare_pair(other, "tiny-qwen", "synth_gsm", cache_root=tmp_path / "a")
    assert calls == [9]  # the student's warm start alone
    report = json.loads((reused / "metrics.json").read_text())
    assert report["teacher_from"] == first.name
    monkeypatch.undo()
    fresh = train.prepare_pair(other, "tiny-qwen", "synth_gsm", cache_root=tmp_path / "b")
    assert "teacher_from" not in json.loads((fresh / "metrics.json").read_text())
    for name in ("teacher", "student"):
        a, b = (
            models.load_model(str(folder / name), "float32").state_dict()
            for folder in (reused, fresh)
        )
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (
        report["teacher_score"] == json.loads((fresh / "metrics.json").read_text())["teacher_score"]
    )
    # a changed teacher field trains its own teacher
    assert (
        train.teacher_donor(
            get_profile("smoke", teacher_steps=13), "tiny-qwen", "synth_gsm", tmp_path / "a"
        )
        is None
    )


def test_a_warm_start_limited_to_some_operations_sees_only_their_problems(tmp_path, monkeypatch):
    """`student_warmup_operations="+-"`: the base student warms up on the problems that add and
    subtract only (train and validation), the teacher on every problem and is reused; synth_summ
    and the default keys are untouched."""
    assert solution_operations("35 * 2 = 70\n70 - 4 = 66\n#### 66") == {"*", "-"}
    profile = get_profile("smoke", teacher_steps=12)
    first = train.prepare_pair(profile, "tiny-qwen", "synth_gsm", cache_root=tmp_path)
    limited = get_profile("smoke", teacher_steps=12, student_warmup_operations="+-")
    assert train.teacher_key(limited, "tiny-qwen", "synth_gsm") == train.teacher_key(
        profile, "tiny-qwen", "synth_gsm"
    )
    assert train.pair_key(limited, "tiny-qwen", "synth_gsm") != first.name
    assert train.pair_key(limited, "tiny-qwen", "synth_summ") == train.pair_key(
        profile, "tiny-qwen", "synth_summ"
    )
    seen = []
    real_sft = train.supervised_finetune
    monkeypatch.setattr(
        train, "supervised_finetune", lambda *a, **k: seen.append(a[1:3]) or real_sft(*a, **k)
    )
    folder = train.prepare_pair(limited, "tiny-qwen", "synth_gsm", cache_root=tmp_path)
    assert json.loads((folder / "metrics.json").read_text())["teacher_from"] == first.name
    [(train_pairs, val_pairs)] = seen
    tok = models.load_tokenizer(str(folder / "tokenizer"))
    examples = load_profile_task(limited, "synth_gsm", "train")
    wanted = [e for e in examples if solution_operations(e["target"]) <= {"+", "-"}]
    assert 0 < len(train_pairs) == len(wanted) < len(examples)
    for _, response in train_pairs + val_pairs:
        assert not {"*", "/"} & set(tok.decode(response).split())
    with pytest.raises(ConfigError, match="student_warmup_operations"):
        get_profile("smoke", student_warmup_operations="+x")
