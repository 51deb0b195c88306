"""Preparing a pair: supervised fine-tuning (teacher SFT, the tiny base student's warm start), the
cached folder of a profile's teacher-student pair for a task, and the SeqKD teacher samples made
once beside it.

    python -m adaswitch_lib prepare --profile smoke --pair tiny-qwen --task synth_gsm
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch

from adaswitch_lib import atomic, kernels, models
from adaswitch_lib.config import Profile, plain, synth_for_task
from adaswitch_lib.data import (
    EpochOrder,
    format_completion,
    format_prompt,
    load_profile_task,
    prompt_style,
    task_kind,
    token_limits,
    tokenize_pairs,
)
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.evaluate import evaluate
from adaswitch_lib.losses import positions_within
from adaswitch_lib.synth import solution_operations

CACHE_ROOT = Path(".cache") / "models"


def collate(pairs, pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (-100 on prompt and padding)."""
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (prompt, response) in enumerate(pairs):
        n = len(prompt) + len(response)
        ids[row, :n] = torch.tensor(prompt + response)
        labels[row, len(prompt) : n] = torch.tensor(response)
        mask[row, :n] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def length_sorted_groups(pairs, groups: int) -> list[list]:
    """(prompt, response) pairs as `groups` parts of similar total length: each part pads only to
    its own longest row."""
    ordered = sorted(pairs, key=lambda pair: len(pair[0]) + len(pair[1]))
    size = math.ceil(len(ordered) / max(1, groups))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _backbone(model):
    """The transformer under the output head (through a LoRA wrapper's base model)."""
    return (model.get_base_model() if hasattr(model, "get_base_model") else model).base_model


def _response_hidden(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(the last hidden states at the positions that predict a response token [n, hidden], those
    tokens [n]) for a `collate`d batch."""
    ids, mask, labels = batch
    hidden = _backbone(model)(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    labels = labels[:, 1:]
    scored = labels != -100
    return hidden[scored], labels[scored]


def _head_nll(head, hidden, labels) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(head(hidden).float(), labels, reduction="sum")


def response_nll(model, batch, normaliser: float = 1.0) -> tuple[torch.Tensor, int]:
    """(summed next-token NLL of the response tokens / normaliser, how many) for a `collate`d batch,
    as the model's own loss computes it. The output head sees response positions only: prompt
    positions carry no label, and at a 151,936-token vocabulary their logits would dwarf the rest.
    Without gradients (validation), positions go through the head in pieces of
    `positions_within(vocab)`. (Qwen2 and Llama heads are a plain projection; a model with logit
    soft-capping needs its own.)"""
    hidden, labels = _response_hidden(model, batch)
    head = model.get_output_embeddings()
    step = len(labels) if torch.is_grad_enabled() else positions_within(head.out_features)
    pieces = range(0, max(len(labels), 1), step)
    total = sum(_head_nll(head, hidden[i : i + step], labels[i : i + step]) for i in pieces)
    return total / normaliser, len(labels)


def _autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def response_nll_backward(model, batch, normaliser: float, autocast=None, scaler=None):
    """The gradients of `response_nll(model, batch, normaliser)`; returns the loss (detached). When
    the response positions' logits would pass `positions_within(vocab)`, the output head runs in
    pieces, each with its own backward pass into a detached copy of the hidden states, whose
    gradient then flows back through the model once: the same gradients, with the logits of one
    piece alive at a time (at a Hub vocabulary a batch's logits are many GiB)."""
    device = next(model.parameters()).device
    with _autocast(device, autocast):
        hidden, labels = _response_hidden(model, batch)
    head = model.get_output_embeddings()
    step = positions_within(head.out_features)

    def backward(loss):
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if len(labels) <= step:  # one piece: the plain backward pass
        with _autocast(device, autocast):
            loss = _head_nll(head, hidden, labels) / normaliser
        backward(loss)
        return loss.detach()
    cut = hidden.detach().requires_grad_()
    total = torch.zeros((), device=device)
    for i in range(0, len(labels), step):
        with _autocast(device, autocast):
            part = _head_nll(head, cut[i : i + step], labels[i : i + step]) / normaliser
        backward(part)
        total += part.detach()
    hidden.backward(cut.grad)
    return total


def sft_backward(
    model, batch, pad_token_id: int, length_groups: int = 1, autocast=None, scaler=None
) -> torch.Tensor:
    """Gradients of the batch's mean response-token loss, accumulated over length-sorted groups;
    returns the loss (detached). `autocast`: the forward's dtype over fp32 weights (None: fp32);
    `scaler`: fp16's gradient scaler."""
    device = next(model.parameters()).device
    groups = [
        collate(group, pad_token_id, device) for group in length_sorted_groups(batch, length_groups)
    ]
    tokens = sum(int((labels[:, 1:] != -100).sum()) for _, _, labels in groups)
    loss = torch.zeros((), device=device)
    for group in groups:
        loss += response_nll_backward(model, group, max(tokens, 1), autocast, scaler)
    return loss


@torch.no_grad()
def validation_nll(model, pairs, pad_token_id: int, batch_size: int = 64) -> float:
    """The token-mean NLL of the reference responses: the SFT validation loss that picks the best
    checkpoint."""
    was_training = model.training
    model.eval()
    device, total, count = next(model.parameters()).device, 0.0, 0
    for start in range(0, len(pairs), batch_size):
        loss, n = response_nll(
            model, collate(pairs[start : start + batch_size], pad_token_id, device)
        )
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


def sft_attention(device) -> str | None:
    """The attention implementation SFT trains with: on CPU transformers' plain ("eager") one, whose
    training steps are faster there than PyTorch's CPU SDPA kernels for the tiny teachers (same
    numbers up to rounding; docs/performance.md). Decoding and the students' updates gain nothing
    from it, so everything else keeps SDPA; None (the model's own) on GPUs."""
    return "eager" if torch.device(device).type == "cpu" else None


def _sft_optimizer(model, lr: float, steps: int, warmup_ratio: float):
    """AdamW (no decay on biases and norms) with linear warm-up and cosine decay (transformers')."""
    from transformers import get_cosine_schedule_with_warmup

    trained = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    decay = [p for p in trained if p.dim() >= 2]
    other = [p for p in trained if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}]
    # on CUDA fused: no temporary copy of every second moment at each step (the foreach path's)
    fused = trained[0].device.type == "cuda" if trained else False
    optimizer = torch.optim.AdamW(
        groups, lr=lr, betas=(0.9, 0.98), **({"fused": True} if fused else {})
    )
    return optimizer, get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)


def _optimizer_step(model, optimizer, schedule, scaler=None) -> None:
    """Clip at 1.0 and step (through fp16's gradient scaler when there is one)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    if scaler is not None:
        scaler.step(optimizer), scaler.update()
    else:
        optimizer.step()
    schedule.step(), optimizer.zero_grad(set_to_none=True)


class BestWeights:
    """The weights with the lowest validation loss so far (paper §3.3 keeps the best checkpoint),
    kept in CPU memory: a second copy of a 1.5B teacher would take 6 GiB of the GPU's."""

    def __init__(self, model, loss: float, step: int = 0):
        self.model, self.loss, self.step = model, loss, step
        self.state = self._copy()

    def _copy(self) -> dict:
        """The trained parameters (under LoRA, the adapters alone)."""
        return {
            name: p.detach().to("cpu", copy=True)
            for name, p in self.model.named_parameters()
            if p.requires_grad
        }

    def offer(self, loss: float, step: int) -> None:
        if loss < self.loss:
            self.loss, self.step, self.state = loss, step, self._copy()

    def restore(self) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.state:
                    p.copy_(self.state[name])


def supervised_finetune(
    model,
    train_pairs,
    val_pairs,
    steps: int,
    lr: float,
    batch_size: int,
    pad_token_id: int,
    warmup_ratio: float = 0.1,
    eval_every: int = 0,
    seed: int = 0,
    log_every: int = 50,
    autocast=None,
    attention: str | None = None,
    length_groups: int = 1,
    checkpointing: bool = False,
) -> dict:
    """AdamW + linear warm-up and cosine decay; loss on response tokens. Keeps the weights with the
    lowest validation NLL (paper §3.3). Returns the history. The model's weights must be fp32 (the
    master copy: AdamW's small steps round away in bf16 weights); `autocast` sets the forward's
    dtype (`models.training_autocast`), fp16 with a gradient scaler.
    `attention`: the attention implementation to train with (the model's own is restored after);
    `length_groups`: each batch computed as this many length-sorted groups (the same gradient up to
    rounding, less padding); `checkpointing`: gradient checkpointing while training."""
    own_attention = model.config._attn_implementation
    model.set_attn_implementation(attention or own_attention)
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("supervised_finetune needs fp32 master weights; load the model in float32")
    optimizer, schedule = _sft_optimizer(model, lr, steps, warmup_ratio)
    scaler = (
        torch.amp.GradScaler(next(model.parameters()).device.type)
        if autocast == torch.float16
        else None
    )
    order = EpochOrder(len(train_pairs), random.Random(seed))
    eval_every = eval_every or max(1, steps // 5)
    best = BestWeights(model, validation_nll(model, val_pairs, pad_token_id))
    history = dict(val_loss=[(0, best.loss)], train_loss=[])
    model.train()
    models.gradient_checkpointing(model, checkpointing)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        batch = [train_pairs[i] for i in order.next_batch(batch_size)]
        loss = sft_backward(model, batch, pad_token_id, length_groups, autocast, scaler)
        _optimizer_step(model, optimizer, schedule, scaler)
        history["train_loss"].append(loss.item())
        if step % log_every == 0:
            elapsed = time.perf_counter() - start
            print(f"    step {step}/{steps}  loss {loss.item():.4f}  {elapsed:.0f} s", flush=True)
        if step % eval_every == 0 or step == steps:
            history["val_loss"].append((step, validation_nll(model, val_pairs, pad_token_id)))
            best.offer(history["val_loss"][-1][1], step)
    best.restore()
    model.eval()
    models.gradient_checkpointing(model, False)
    model.set_attn_implementation(own_attention)
    history.update(
        best_step=best.step, best_val_loss=best.loss, seconds=time.perf_counter() - start
    )
    return history


def task_sft_steps(profile: Profile, task: str) -> tuple[int, int]:
    """(teacher SFT steps, base-student warm-start steps) for a task; 0 teacher steps = by
    epochs."""
    summ = task_kind(task) == "summ"
    teacher = (profile.teacher_steps_summ if summ else 0) or profile.teacher_steps
    warmup = (profile.student_warmup_steps_summ if summ else 0) or profile.student_warmup_steps
    return teacher, warmup


def _checkpoints(profile: Profile, pair: str) -> dict:
    """The checkpoints a Hub pair starts from: part of its cache key and its metrics.json."""
    if pair.startswith("tiny-"):
        return {}
    return {
        f"{who}_checkpoint": dataclasses.asdict(checkpoint)
        for who, checkpoint in zip(("teacher", "student"), models.pair_checkpoints(profile, pair))
    }


def _unless_default(profile: Profile, *names: str) -> dict:
    """Fields added to the cache key only when set, so that existing keys stay as they were."""
    return {n: getattr(profile, n) for n in names if getattr(profile, n) != getattr(Profile, n)}


# the fields that shape only the tiny base student: a pair that differs in these alone reuses the
# teacher of an existing folder (calibrating the warm start does not retrain the teacher)
STUDENT_ONLY_FIELDS = (
    "student_shape",
    "student_lr",
    "student_warmup_steps",
    "student_warmup_operations",
)


def _key_fields(profile: Profile, pair: str, task: str) -> dict:
    """Everything that shapes this task's prepared models (a field that only another task uses
    does not retrain this one)."""
    names = (
        "teacher_shape",
        "student_shape",
        "tokenizer_vocab",
        "synth",
        "teacher_lr",
        "teacher_epochs",
        "teacher_batch_size",
        "dropout",
        "student_lr",
        "instruct",
        "warmup_ratio",
        "max_eval_examples",
        "dtype",
        "train_bf16",
        "length_groups",
    )
    fields = {n: plain(getattr(profile, n), result_only=True) for n in names}
    fields["synth"] = synth_for_task(profile.synth, task)
    teacher_steps, warmup_steps = task_sft_steps(profile, task)
    return dict(
        fields,
        pair=pair,
        task=task,
        tokenizer=models.TOKENIZER_VERSION,
        teacher_steps=teacher_steps,
        student_warmup_steps=warmup_steps,
        token_limits=token_limits(profile, task),
        **_checkpoints(profile, pair),
        **_unless_default(profile, "sft_val_examples", "teacher_sft", "lora_rank", "cpu_kernels"),
        **_warm_start_key(profile, task),
    )


def _hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def pair_key(profile: Profile, pair: str, task: str) -> str:
    """Cache key: pair, task and a hash of every profile field that shapes this task's prepared
    models."""
    return f"{pair}-{task}-{_hash(_key_fields(profile, pair, task))}"


def teacher_key(profile: Profile, pair: str, task: str) -> str:
    """The part of the cache key that shapes the tokenizer and the teacher (every field but the
    base student's), written into metrics.json so that another pair can reuse the teacher."""
    fields = _key_fields(profile, pair, task)
    teacher_fields = {k: v for k, v in fields.items() if k not in STUDENT_ONLY_FIELDS}
    return f"{pair}-{task}-teacher-{_hash(teacher_fields)}"


def teacher_donor(profile: Profile, pair: str, task: str, cache_root: Path = CACHE_ROOT):
    """A finished folder whose tokenizer and teacher this pair would train identically, or None."""
    key = teacher_key(profile, pair, task)
    for folder in sorted(Path(cache_root).glob(f"*/{pair}-{task}-*")):
        metrics = folder / "metrics.json"
        if atomic.is_complete(folder) and json.loads(metrics.read_text()).get("teacher_key") == key:
            return folder
    return None


def pair_folder_if_ready(
    profile: Profile, pair: str, task: str, cache_root: Path = CACHE_ROOT
) -> Path | None:
    """The finished folder of this pair, or None. The key names everything that shapes the models,
    so a folder another profile prepared with the same key (cpu for cpu-full, say) is used too."""
    key = pair_key(profile, pair, task)
    own = Path(cache_root) / profile.name / key
    for folder in (own, *sorted(Path(cache_root).glob(f"*/{key}"))):
        if atomic.is_complete(folder):
            return folder
    return None


def _initial_models(profile: Profile, pair: str, train, device):
    """(tokenizer, teacher, student) before any training: a tiny pair built here (its BPE trained
    on the task's train split) or the Hub checkpoints (the profile may name other ids, local
    folders and revisions)."""
    if pair.startswith("tiny-"):
        texts = [format_prompt(e) + format_completion(e) for e in train]
        tokenizer = models.train_tokenizer(texts, profile.tokenizer_vocab)
        teacher = models.tiny_model(pair, profile.teacher_shape, tokenizer, profile.dropout, seed=1)
        student = models.tiny_model(pair, profile.student_shape, tokenizer, profile.dropout, seed=2)
        return tokenizer, teacher.to(device), student.to(device)
    teacher_checkpoint, student_checkpoint = models.pair_checkpoints(profile, pair)
    tokenizer = models.load_tokenizer(student_checkpoint.name_or_path, student_checkpoint.revision)
    # fp32 master weights for fine-tuning; the teacher teaches in the profile's dtype afterwards.
    # The base student waits on the CPU while the teacher trains (prepare_pair moves it after).
    teacher, student = (
        models.load_model(c.name_or_path, "float32", where, c.revision, dropout=profile.dropout)
        for c, where in ((teacher_checkpoint, device), (student_checkpoint, "cpu"))
    )
    return tokenizer, teacher, student


def _sft_settings(profile: Profile, device, pad_token_id: int) -> dict:
    return dict(
        pad_token_id=pad_token_id,
        warmup_ratio=profile.warmup_ratio,
        autocast=models.training_autocast(device, profile.train_bf16),
        length_groups=profile.length_groups,
        checkpointing=profile.gradient_checkpointing,
    )


def _teacher_sft(profile, task, teacher, pad_token_id, train_pairs, val_pairs, device):
    """The teacher's SFT (LoRA adapters folded back in when the profile asks for them): its
    history."""
    steps, _ = task_sft_steps(profile, task)
    steps = steps or math.ceil(
        profile.teacher_epochs * len(train_pairs) / profile.teacher_batch_size
    )
    lora = profile.teacher_sft == "lora"
    trainee = models.lora_adapters(teacher, profile.lora_rank, profile.dropout) if lora else teacher
    torch.manual_seed(1)  # dropout's draws: the teacher depends on its own fields alone
    history = supervised_finetune(
        trainee,
        train_pairs,
        val_pairs,
        steps,
        profile.teacher_lr,
        profile.teacher_batch_size,
        log_every=max(profile.log_every, steps // 10),
        attention=sft_attention(device),
        **_sft_settings(profile, device, pad_token_id),
    )
    if lora:  # the adapters folded into the teacher's weights: a plain checkpoint again
        trainee.merge_and_unload()
    history.pop("train_loss")
    return history


def _student_warm_start(profile, pair, task, student, pad_token_id, train_pairs, val_pairs, device):
    """The tiny base student's warm start: an SFT that leaves it writing task-shaped text but
    solving little (the paper's base students score ~0 on GSM): either short, stopped before its
    phase transition, or to convergence on a part of synth_gsm (`student_warmup_operations`; the
    caller passes those examples). Its history, or None without one (a Hub pair's student is as
    published)."""
    _, warmup_steps = task_sft_steps(profile, task)
    if not pair.startswith("tiny-") or not warmup_steps:
        return None
    torch.manual_seed(2)
    history = supervised_finetune(
        student,
        train_pairs,
        val_pairs,
        warmup_steps,
        profile.student_lr,
        profile.teacher_batch_size,
        eval_every=warmup_steps,
        seed=1,
        log_every=max(profile.log_every, warmup_steps // 5),
        **_sft_settings(profile, device, pad_token_id),
    )
    history.pop("train_loss")
    return history


def _warm_start_operations(profile: Profile, task: str) -> str:
    """The operations the base student's warm start is limited to ("" = every problem)."""
    return profile.student_warmup_operations if task == "synth_gsm" else ""


def _warm_start_key(profile: Profile, task: str) -> dict:
    """The warm start's operations in the cache key, only when they limit this task's warm start
    (so that every existing key stays as it was)."""
    operations = _warm_start_operations(profile, task)
    return {"student_warmup_operations": operations} if operations else {}


def _warm_start_examples(profile: Profile, task: str, examples: list[dict]) -> list[dict]:
    """The examples the base student warms up on: with `student_warmup_operations` set, only the
    problems whose every step uses those operations. Why: a student warmed up to convergence on a
    part of the task sits on a plateau (robust to another CPU's rounding and to KD's first steps)
    and leaves KD the rest of the task to teach."""
    operations = set(_warm_start_operations(profile, task))
    kept = [e for e in examples if not operations or solution_operations(e["target"]) <= operations]
    if not kept:
        raise ConfigError(
            f"student_warmup_operations = {profile.student_warmup_operations!r} keeps no "
            f"{task} example: add operations"
        )
    return kept


def _donated_models(profile: Profile, pair: str, donor: Path, device):
    """(tokenizer, teacher, base student before training) with the tokenizer and trained teacher
    of `donor`, a folder whose teacher this pair would train identically."""
    tokenizer = models.load_tokenizer(str(donor / "tokenizer"))
    teacher = models.load_model(str(donor / "teacher"), "float32", device)
    if pair.startswith("tiny-"):
        student = models.tiny_model(pair, profile.student_shape, tokenizer, profile.dropout, seed=2)
    else:
        _, checkpoint = models.pair_checkpoints(profile, pair)
        student = models.load_model(checkpoint.name_or_path, "float32", "cpu", checkpoint.revision)
    return tokenizer, teacher, student.to(device)


def prepare_pair(
    profile: Profile,
    pair: str,
    task: str,
    cache_root: Path = CACHE_ROOT,
) -> Path:
    """Build (or find) the teacher and base student of a pair for a task; returns their folder with
    `tokenizer/`, `teacher/`, `student/` and `metrics.json`. A finished folder is reused as it is.
    Stops first when this process does not run the profile's `cpu_kernels` (every run and
    baseline passes here before it computes)."""
    kernels.check(profile.cpu_kernels, models.device_and_dtype(profile.dtype)[0].type)
    ready = pair_folder_if_ready(profile, pair, task, cache_root)
    if ready is not None:
        return ready
    folder = Path(cache_root) / profile.name / pair_key(profile, pair, task)
    print(f"==> preparing {pair} on {task} -> {folder}", flush=True)
    max_prompt, max_new = token_limits(profile, task)
    train, val, test = (
        load_profile_task(profile, task, s) for s in ("train", "validation", "test")
    )
    device, _ = models.device_and_dtype(profile.dtype)

    donor = teacher_donor(profile, pair, task, cache_root)
    if donor is not None:
        print(
            f"    the tokenizer and teacher come from {donor.name} (same teacher fields)",
            flush=True,
        )

    def write(tmp: Path):
        if donor is None:
            tokenizer, teacher, student = _initial_models(profile, pair, train, device)
        else:
            tokenizer, teacher, student = _donated_models(profile, pair, donor, device)
        models.save_tokenizer(tokenizer, tmp / "tokenizer")
        style = prompt_style(profile)
        train_pairs = tokenize_pairs(tokenizer, train, max_prompt, max_new, style)
        val_pairs = tokenize_pairs(
            tokenizer, val[: profile.sft_val_examples], max_prompt, max_new, style
        )
        data = (tokenizer.pad_token_id, train_pairs, val_pairs, device)
        report = dict(pair=pair, task=task, profile=profile.name, **_checkpoints(profile, pair))
        report["teacher_key"] = teacher_key(profile, pair, task)
        if donor is None:
            report["teacher_sft"] = _teacher_sft(profile, task, teacher, *data)
        else:
            donated = json.loads((donor / "metrics.json").read_text())
            report["teacher_from"] = donor.name
            report.update({k: donated[k] for k in ("teacher_sft", "teacher_score")})
        if _warm_start_operations(profile, task):
            warm_train, warm_val = (
                tokenize_pairs(tokenizer, examples, max_prompt, max_new, style)
                for examples in (
                    _warm_start_examples(profile, task, train),
                    _warm_start_examples(profile, task, val)[: profile.sft_val_examples],
                )
            )
            data = (tokenizer.pad_token_id, warm_train, warm_val, device)
        warm_start = _student_warm_start(profile, pair, task, student, *data)
        if warm_start is not None:
            report["student_warm_start"] = warm_start
        student = student.to(device)
        for name, model in (("teacher", teacher), ("student", student)):
            model.save_pretrained(tmp / name)
            if name == "teacher" and donor is not None:
                continue  # scored where it was trained, by the same evaluation
            start = time.perf_counter()
            report[f"{name}_score"] = evaluate(
                model, tokenizer, task, test, max_new, max_prompt, profile.eval_batch_size, style
            ).score
            report[f"{name}_eval_seconds"] = time.perf_counter() - start
        report["weights_digest"] = _weights_digest(tmp)
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2))

    return atomic.write_folder(folder, write)


def weights_digest(folder: Path) -> str:
    """A short sha256 of a prepared pair's weight files (teacher and base student). Run records
    carry it, so that runs made from different preparations of one pair (another host's rounding,
    say) are never mixed in one table. Written into metrics.json at preparation; computed from the
    files for folders prepared before."""
    metrics = Path(folder) / "metrics.json"
    if metrics.exists():
        digest = json.loads(metrics.read_text()).get("weights_digest")
        if digest:
            return digest
    return _weights_digest(Path(folder))


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("teacher", "student"):
        for path in sorted((folder / name).glob("*.safetensors")):
            digest.update(f"{name}/{path.name}".encode())
            with open(path, "rb") as weights:
                while chunk := weights.read(1 << 24):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def load_prepared(
    folder: Path, dtype: str = "auto", device: str | None = None, student_dtype: str | None = None
):
    """(teacher, student, tokenizer) from a prepared folder; the student in `student_dtype` when
    given (the kit's students keep fp32 weights wherever they are trained or scored), else in
    `dtype`."""
    folder = Path(folder)
    if not atomic.is_complete(folder):
        raise FileNotFoundError(f"{folder} is not a finished prepared pair; run prepare_pair first")
    return (
        models.load_model(str(folder / "teacher"), dtype, device),
        models.load_model(str(folder / "student"), student_dtype or dtype, device),
        models.load_tokenizer(str(folder / "tokenizer")),
    )


def seqkd_pairs(
    folder: Path, profile: Profile, teacher, tokenizer, kd_pairs, max_new_tokens: int
) -> list:
    """SeqKD's targets: the teacher's sample for every KD prompt (at the profile's teacher
    temperature / top-p), made once per (pair, task, sampling settings) and cached beside the
    prepared pair in `seqkd-<hash>.json`; returned as (prompt ids, response ids) aligned with
    kd_pairs."""
    from adaswitch_lib.sampler import SamplerConfig
    from adaswitch_lib.targets import teacher_responses

    prompts = [prompt for prompt, _ in kd_pairs]
    settings = dict(
        temperature=profile.teacher_temperature,
        top_p=profile.teacher_top_p,
        max_new_tokens=max_new_tokens,
        prompts=hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
    )
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(folder) / f"seqkd-{key}.json"
    if path.is_file():
        responses = json.loads(path.read_text())["responses"]
    else:
        cfg = SamplerConfig(
            max_new_tokens=max_new_tokens,
            teacher_temperature=profile.teacher_temperature,
            teacher_top_p=profile.teacher_top_p,
            eos_token_id=models.stop_token_ids(tokenizer, teacher),
            pad_token_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
        )
        start = time.perf_counter()
        responses = teacher_responses(
            teacher, tokenizer, prompts, cfg, seed=0, batch_size=profile.eval_batch_size
        )
        atomic.write_json(
            path, dict(settings, seconds=time.perf_counter() - start, responses=responses)
        )
    return list(zip(prompts, responses))
