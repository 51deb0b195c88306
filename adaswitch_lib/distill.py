"""The one distillation loop for every method of Table 1.

Each step: build the batch's target sequences as the method's row in `methods.py` says
(`targets.py`), get the teacher's logits on them (reused from the sampler for SKD and AdaSwitch, one
scoring pass otherwise), and take one AdamW step on the loss. `accelerate` owns the device, mixed
precision and distribution, so the same function runs in a notebook, from the command line and under
`accelerate launch`:

    python -m adaswitch_lib distill --profile smoke --pair tiny-qwen --task synth_gsm --method
    adaswitch
    accelerate launch --num_processes 2 --cpu -m adaswitch_lib distill --profile smoke ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaswitch_lib.config import RunConfig
from adaswitch_lib.data import EpochOrder
from adaswitch_lib.decoding import length_groups
from adaswitch_lib.errors import KitError
from adaswitch_lib.losses import (
    LOGITS_BUDGET_BYTES,
    distill_loss,
    distill_loss_from_hidden,
    nll_loss,
    nll_loss_from_hidden,
    position_weights,
)
from adaswitch_lib.methods import EARLY_METHODS, get_method
from adaswitch_lib.models import gradient_checkpointing, stop_token_ids
from adaswitch_lib.sampler import SamplerConfig, Targets, shared_vocab_size
from adaswitch_lib.targets import Pair, build_targets, imitkd_beta, sampler_config, step_noise


def is_sharded(accelerator) -> bool:
    """True under FSDP or DeepSpeed ZeRO-3: the student's weights are split over the processes, so
    each of its forward passes needs every process (evaluation included)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = (
        accelerator.state.deepspeed_plugin
        if accelerator.distributed_type == DistributedType.DEEPSPEED
        else None
    )
    return plugin is not None and plugin.zero_stage == 3


def rank_gather(accelerator):
    """The samplers' `gather` over the run's processes (None for one process): every rank then calls
    forward as often as the others while any rank samples, as FSDP and ZeRO-3 need."""
    if accelerator.num_processes == 1:
        return None
    return lambda values: accelerator.gather(values[None])


# the frozen teacher's logits on fixed targets are kept across epochs up to this size (off-policy's
# ground truth, the validation set): the tiny vocabularies fit, a Hub vocabulary over long
# responses may not (then they are scored each time)
TEACHER_CACHE_BYTES = 512 * 2**20


# ---------------------------------------------------------------------------- logits and loss
def _forward(model, targets: Targets, **kwargs):
    """The model over the target sequences, without a cache. Position ids come from the mask:
    prompts are left-padded."""
    positions = (targets.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return model(
        input_ids=targets.sequences,
        attention_mask=targets.attention_mask,
        position_ids=positions,
        use_cache=False,
        **kwargs,
    )


def response_logits(model, targets: Targets, vocab: int) -> torch.Tensor:
    """The model's next-token logits at every response position [B, N, vocab] (prompt positions are
    never sent through the output head)."""
    n = targets.response_mask.shape[1]
    return _forward(model, targets, logits_to_keep=n + 1).logits[:, :-1, :vocab]


def response_hidden(model, targets: Targets) -> torch.Tensor:
    """The final (normed) hidden states at every response position [B, N, hidden]: what
    `response_logits` sends through the output head. The forward still goes through `model` (DDP's
    wrapper included); its own head sees one position."""
    n = targets.response_mask.shape[1]
    out = _forward(model, targets, logits_to_keep=1, output_hidden_states=True)
    return out.hidden_states[-1][:, -(n + 1) : -1]


def logits_fit(targets: Targets, vocab: int) -> bool:
    """Whether the student's fp32 logits on these targets fit `LOGITS_BUDGET_BYTES` (always at the
    tiny pairs' vocabularies; a Hub vocabulary of 151,936 passes it at ~880 response tokens)."""
    return targets.response_mask.numel() * vocab * 4 <= LOGITS_BUDGET_BYTES


def target_loss(
    method: str,
    run: RunConfig,
    student_logits,
    teacher_logits,
    targets: Targets,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The method's loss on its targets: NLL, or D(p_T || p_S) token by token."""
    if get_method(method).loss == "nll":
        return nll_loss(
            student_logits, targets.responses, targets.response_mask, run.loss_reduction, weights
        )
    return distill_loss(
        student_logits,
        teacher_logits,
        targets.response_mask,
        run.divergence,
        run.loss_reduction,
        beta=run.jsd_beta,
        alpha=run.skew_alpha,
        weights=weights,
    )


@dataclass
class DistillResult:
    steps: int
    log: list[dict]  # one dict per step (also written as JSONL)
    evaluations: list[dict]  # what the evaluator returned, with its step
    seconds: dict = field(default_factory=dict)  # whole loop and per phase
    student_checksums: list[float] = field(default_factory=list)  # one per process: equal under DDP
    continuation: dict | None = None  # teacher_continuation = "auto": the choice and its timings


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_eval_step(profile, step: int, steps: int, dense_early: bool = True) -> bool:
    """Every eval_every steps, the first and the last; densely early on for the methods of Figures 5
    and 8 (the others' early points feed no figure, so they are skipped)."""
    if step in (0, steps):
        return True
    every = (
        profile.eval_every_early
        if dense_early and step <= profile.eval_early_steps
        else profile.eval_every
    )
    return step % every == 0


def mixed_precision(
    choice: str = "auto", cuda: bool | None = None, bf16_supported: bool | None = None
) -> str:
    """accelerate's mixed_precision for a profile's `kd_mixed_precision`: "auto" is bf16 on CUDA,
    fp16 (with loss scaling) on GPUs without bf16 such as Colab's T4, and none on CPU."""
    if choice != "auto":
        return choice
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "no"
    return (
        "bf16"
        if (torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported)
        else "fp16"
    )


def make_accelerator(profile):
    """The Accelerator a run uses: the GPU when there is one, the profile's mixed precision."""
    from accelerate import Accelerator

    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed_precision(profile.kd_mixed_precision),
    )


class PhaseTimer:
    """Seconds per phase of the loop, summed over steps (`totals`) and of the latest step (`last`).
    On CUDA each phase ends with a synchronisation, so a phase is charged for its own kernels."""

    def __init__(
        self, device, phases=("sampling", "teacher_scoring", "student_update", "evaluation")
    ):
        self.device, self.totals, self.last = device, dict.fromkeys(phases, 0.0), {}

    @contextlib.contextmanager
    def __call__(self, phase: str, sync: bool = True):
        if sync:
            _sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                _sync(self.device)
            self.last[phase] = time.perf_counter() - start
            self.totals[phase] += self.last[phase]


def imitkd_coins(
    run: RunConfig, step: int, steps: int, rows: int
) -> tuple[float | None, list[bool] | None]:
    """ImitKD's probability of ground truth at a step and each row's coin (None for other
    methods)."""
    if get_method(run.method).targets != "mixed":
        return None, None
    beta = imitkd_beta(run, step - 1, steps)
    coins = random.Random(f"imitkd/{run.seed}/{step}")
    return beta, [coins.random() < beta for _ in range(rows)]


def make_optimizer(student, profile, steps: int, fused: bool = False):
    """AdamW (no decay on biases and norms) with linear warm-up then linear decay, as the SKD code
    base the paper's baselines come from; its states in fp32, or in 8 bits (`kd_optimizer`).
    `fused` (on CUDA): one kernel per step, and none of the foreach path's temporary copy of every
    second moment (4 bytes a parameter at each step)."""
    from transformers import get_linear_schedule_with_warmup

    decay = [p for n, p in student.named_parameters() if p.dim() >= 2]
    other = [p for n, p in student.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}]
    if profile.kd_optimizer == "adamw_8bit":
        optimizer = adamw_8bit(groups, lr=profile.kd_lr)
    else:
        optimizer = torch.optim.AdamW(
            groups, lr=profile.kd_lr, **({"fused": True} if fused else {})
        )
    return optimizer, get_linear_schedule_with_warmup(
        optimizer, int(profile.kd_warmup_ratio * steps), steps
    )


def adamw_8bit(groups, lr: float):
    """bitsandbytes' AdamW with block-wise 8-bit moments (tensors under 4,096 entries keep fp32
    ones); the same defaults as torch's AdamW otherwise. It runs on CUDA and on CPU."""
    try:
        import bitsandbytes
    except ImportError:
        raise KitError(
            "kd_optimizer = adamw_8bit needs bitsandbytes: pip install 'bitsandbytes>=0.50'"
        ) from None
    return bitsandbytes.optim.AdamW8bit(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


@dataclass
class Loop:
    """What every step of one run shares."""

    run: RunConfig
    accelerator: object
    model: object  # the student as accelerate prepared it (trained)
    plain: object  # the same student unwrapped (samples and is evaluated)
    teacher: object
    cfg: SamplerConfig
    vocab: int
    kd_pairs: list
    teacher_pairs: list | None
    max_new_tokens: int
    continuation: dict | None = None  # "auto": set by the first step's choose_continuation
    # off-policy: the teacher's logits of each KD example's reference response, [n_i, V], kept
    # across epochs within TEACHER_CACHE_BYTES
    teacher_cache: dict = field(default_factory=dict)

    @property
    def method(self):
        return get_method(self.run.method)


def update_loss(loop: Loop, targets: Targets, teacher_logits, weights) -> torch.Tensor:
    """The method's loss on the student being trained. When its logits would pass the budget, they
    are made a piece of positions at a time from the hidden states (`losses.head_loss`): the same
    loss and gradients, and the [B, N, vocab] logits never held at once. A sharded student (FSDP,
    ZeRO-3) always takes the plain path: its head weight lives in shards."""
    run, model = loop.run, loop.model
    if logits_fit(targets, loop.vocab) or is_sharded(loop.accelerator):
        logits = response_logits(model, targets, loop.vocab)
        return target_loss(run.method, run, logits, teacher_logits, targets, weights)
    hidden = response_hidden(model, targets)
    head = loop.plain.get_output_embeddings().weight[: loop.vocab]
    if get_method(run.method).loss == "nll":
        return nll_loss_from_hidden(hidden, head, targets.responses, weights)
    return distill_loss_from_hidden(
        hidden, head, teacher_logits, weights, run.divergence, run.jsd_beta, run.skew_alpha
    )


def step_targets(loop: Loop, rows: list[int], step: int, gold: list[bool] | None) -> list[Targets]:
    """This process's targets of a step, one per micro-batch (strided over its rows, so every
    micro-batch sees a spread of the batch)."""
    run, accelerator = loop.run, loop.accelerator
    batch, accum = run.profile.kd_batch_size, run.profile.grad_accum_steps
    local = batch // accelerator.num_processes
    mine = list(range(accelerator.process_index * local, (accelerator.process_index + 1) * local))
    noise = step_noise(run.seed, step, batch, loop.max_new_tokens)
    gather = rank_gather(accelerator)
    targets = [
        build_targets(
            run.method,
            run,
            loop.plain,
            loop.teacher,
            [loop.kd_pairs[rows[i]] for i in part],
            noise[:, part],
            loop.cfg,
            accelerator.device,
            ground_truth_rows=[gold[i] for i in part] if gold else None,
            teacher_pairs=[loop.teacher_pairs[rows[i]] for i in part]
            if loop.teacher_pairs
            else None,
            gather=gather,
        )
        for part in (mine[i::accum] for i in range(accum))
    ]
    for t, part in zip(targets, (mine[i::accum] for i in range(accum))):
        # which KD example each row is: fixed targets' teacher logits are kept by example
        t.stats["kd_index"] = torch.tensor([rows[i] for i in part], device=accelerator.device)
    return targets


def choose_continuation(loop: Loop, rows: list[int], step: int, gold) -> list[Targets]:
    """teacher_continuation = "auto": sample the first step's targets with each continuation,
    twice in turns (the first call of each pays warm-up), and keep the faster for the whole run.
    Both are exact in distribution, and a step's draws are seeded, so the run is exactly the run
    with that continuation fixed; only the time differs. Every process takes the same choice, by
    the slowest process's times. Returns the step's targets under the choice."""
    times, kept = {}, {}
    for name in ("exact", "speculative", "speculative", "exact"):
        loop.cfg = dataclasses.replace(loop.cfg, teacher_continuation=name)
        _sync(loop.accelerator.device)
        start = time.perf_counter()
        kept[name] = step_targets(loop, rows, step, gold)
        _sync(loop.accelerator.device)
        times[name] = min(times.get(name, math.inf), time.perf_counter() - start)
    local = torch.tensor([[times["exact"], times["speculative"]]], device=loop.accelerator.device)
    slowest = loop.accelerator.gather(local).max(dim=0).values.tolist()
    chosen = "exact" if slowest[0] <= slowest[1] else "speculative"
    loop.cfg = dataclasses.replace(loop.cfg, teacher_continuation=chosen)
    loop.continuation = dict(
        chosen=chosen, exact_seconds=slowest[0], speculative_seconds=slowest[1]
    )
    return kept[chosen]


def teacher_logits_for(loop: Loop, parts: list[Targets]) -> list[torch.Tensor | None]:
    """The teacher's logits on each part: kept by the sampler (SKD, AdaSwitch), one scoring pass
    (the other divergence methods), or none (NLL methods)."""
    out = []
    for t in parts:
        if not loop.method.needs_teacher_logits:
            out.append(None)
        elif t.teacher_logits is not None:
            out.append(t.teacher_logits)
        elif loop.method.targets == "ground_truth":
            out.append(cached_teacher_logits(loop, t))
        else:
            with torch.no_grad():
                out.append(response_logits(loop.teacher, t, loop.vocab))
    return out


@torch.no_grad()
def cached_teacher_logits(loop: Loop, t: Targets) -> torch.Tensor:
    """The teacher's logits on reference responses (off-policy), scored once per KD example: a
    part whose every example was scored in an earlier epoch is assembled from the cache instead
    of a teacher pass (the same values up to the rounding of another batch's padding); a new part
    is scored and its rows kept while the cache stays within TEACHER_CACHE_BYTES."""
    cache, index = loop.teacher_cache, t.stats["kd_index"].tolist()
    lengths = t.response_mask.sum(-1).long().tolist()
    if all(i in cache for i in index):
        first = cache[index[0]]
        logits = first.new_zeros(len(index), t.response_mask.shape[1], first.shape[-1])
        for row, (i, n) in enumerate(zip(index, lengths)):
            logits[row, :n] = cache[i][:n]
        return logits
    logits = response_logits(loop.teacher, t, loop.vocab)
    held = sum(x.numel() * x.element_size() for x in cache.values())
    for row, (i, n) in enumerate(zip(index, lengths)):
        kept = logits[row, :n].clone()
        held += kept.numel() * kept.element_size()
        if held > TEACHER_CACHE_BYTES:
            break
        cache[i] = kept
    return logits


def accumulate_gradients(
    loop: Loop, targets: list[Targets], parts: list[Targets], teacher_logits
) -> torch.Tensor:
    """Backward of the step's loss over every part; returns the loss, averaged over processes. The
    normaliser counts every target token of the step on every process, so the parts' gradients add
    up to the one-batch gradient."""
    run, accelerator, model = loop.run, loop.accelerator, loop.model
    device, world = accelerator.device, accelerator.num_processes
    counts = torch.tensor([sum(int(t.response_mask.sum()) for t in targets)], device=device)
    total_tokens = int(accelerator.reduce(counts, reduction="sum").item())
    model.train()
    step_loss = torch.zeros((), device=device)
    for k, (t, t_logits) in enumerate(zip(parts, teacher_logits)):
        # DDP averages gradients over processes: scale by `world` so the sum is the global loss
        weights = world * position_weights(
            t.response_mask,
            run.loss_reduction,
            total_rows=run.profile.kd_batch_size,
            total_tokens=total_tokens,
        )
        # gradients are all-reduced once, after the last part
        with accelerator.no_sync(model) if k < len(parts) - 1 else contextlib.nullcontext():
            with accelerator.autocast():
                loss = update_loss(loop, t, t_logits, weights)
            accelerator.backward(loss)
        step_loss += loss.detach()
    return accelerator.reduce(step_loss, reduction="mean")


def train_step(
    loop: Loop, optimizer, schedule, rows: list[int], step: int, gold, timer: PhaseTimer
) -> tuple:
    """One optimiser step: targets (in eval mode: no dropout), teacher logits, the update.
    Returns (loss, this process's targets)."""
    with timer("sampling"):
        loop.model.eval()
        auto = loop.run.teacher_continuation == "auto" and loop.run.method == "adaswitch"
        if auto and not loop.continuation:
            targets = choose_continuation(loop, rows, step, gold)
        else:
            targets = step_targets(loop, rows, step, gold)
        # scoring and update go over rows grouped by length, each group trimmed of its shared
        # padding
        parts = [g for t in targets for g in length_groups(t, loop.run.profile.length_groups)]
    with timer("teacher_scoring"):
        teacher_logits = teacher_logits_for(loop, parts)
    with timer("student_update"):
        loss = accumulate_gradients(loop, targets, parts, teacher_logits)
        if not torch.isfinite(loss):
            raise KitError(
                f"step {step}: the {loop.run.method} loss is {loss.item()} (not finite); no record "
                f"written; lower kd_lr or try another seed"
            )
        loop.accelerator.clip_grad_norm_(loop.model.parameters(), loop.run.profile.max_grad_norm)
        optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
    return loss, targets


def student_checksums(plain, accelerator) -> list[float]:
    """One weight checksum per process: equal when DDP kept the replicas in step; per shard when
    sharded."""
    with torch.no_grad():
        local = [
            p.to_local() if hasattr(p, "to_local") else p for p in plain.parameters()
        ]  # FSDP2: DTensors
        checksum = torch.tensor(
            [sum(float(p.double().sum()) for p in local)],
            device=accelerator.device,
            dtype=torch.float64,
        )
    return accelerator.gather(checksum).tolist()


class StepLog:
    """The per-step log: kept in memory, written as JSON lines (main process), and one console
    line every `log_every` steps."""

    def __init__(self, path: Path | None, main: bool, log_every: int, steps: int):
        self.entries, self.log_every, self.steps, self.start = (
            [],
            log_every,
            steps,
            time.perf_counter(),
        )
        self.main, self.file = main, open(path, "w") if (path and main) else None

    def add(self, entry: dict) -> None:
        self.entries.append(entry)
        if self.file:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
        step = entry["step"]
        if self.main and (step % self.log_every == 0 or step == self.steps):
            elapsed = time.perf_counter() - self.start
            print(
                f"    step {step}/{self.steps}  loss {entry['loss']:.4f}  {elapsed:.0f} s",
                flush=True,
            )

    def close(self) -> None:
        if self.file:
            self.file.close()


class Evaluations:
    """The evaluator's scores at the profile's evaluation steps: on the main process, on every
    process when the student is sharded (its forward needs them all); the main process keeps
    them."""

    def __init__(self, evaluator, loop: Loop, timer: PhaseTimer, steps: int):
        self.evaluator, self.loop, self.timer, self.steps, self.scores = (
            evaluator,
            loop,
            timer,
            steps,
            [],
        )
        self.sharded, self.dense_early = (
            is_sharded(loop.accelerator),
            loop.run.method in EARLY_METHODS,
        )

    def maybe(self, step: int) -> None:
        accelerator = self.loop.accelerator
        if not _is_eval_step(self.loop.run.profile, step, self.steps, self.dense_early):
            return
        if self.evaluator is not None and (accelerator.is_main_process or self.sharded):
            with self.timer("evaluation", sync=False):
                scores = self.evaluator(step, self.loop.plain)
            if accelerator.is_main_process:
                self.scores.append(dict(step=step, **scores))
        accelerator.wait_for_everyone()


def _make_loop(
    run, teacher, student, tokenizer, kd_pairs, teacher_pairs, max_new_tokens, accelerator, steps
):
    """The run's shared state, the optimiser and its schedule; seeds torch before the optimiser."""
    method = get_method(run.method)
    keep = method.sampler_keeps_teacher_logits
    stop = stop_token_ids(tokenizer, student, teacher)
    cfg = sampler_config(
        run, tokenizer, max_new_tokens, keep_teacher_logits=keep, eos_token_id=stop
    )
    vocab = shared_vocab_size(student, teacher, len(tokenizer))
    teacher = teacher.to(accelerator.device).eval().requires_grad_(False)
    torch.manual_seed(run.seed)
    gradient_checkpointing(student, run.profile.gradient_checkpointing)
    fused = accelerator.device.type == "cuda"
    optimizer, schedule = make_optimizer(student, run.profile, steps, fused)
    # the schedule stays ours: accelerate would step a prepared one once per process each step
    model, optimizer = accelerator.prepare(student, optimizer)
    plain = accelerator.unwrap_model(model)
    loop = Loop(
        run, accelerator, model, plain, teacher, cfg, vocab, kd_pairs, teacher_pairs, max_new_tokens
    )
    return loop, optimizer, schedule


def distill(
    run: RunConfig,
    teacher,
    student,
    tokenizer,
    kd_pairs: list[Pair],
    *,
    max_new_tokens: int,
    teacher_pairs: list[Pair] | None = None,
    evaluator=None,
    log_path: Path | None = None,
    accelerator=None,
    steps: int | None = None,
) -> DistillResult:
    """Distil `teacher` into `student` (in place) on the KD prompts with the run's method.
    `evaluator(step, student) -> dict` runs on the main process at the profile's evaluation steps
    (on every process under FSDP / ZeRO-3, where it must be `synced`; the main process keeps it);
    `teacher_pairs` are SeqKD's targets, aligned with `kd_pairs`."""
    profile = run.profile
    accelerator = accelerator or make_accelerator(profile)
    batch, world = profile.kd_batch_size, accelerator.num_processes
    if batch % (world * profile.grad_accum_steps):
        raise KitError(
            f"kd_batch_size {batch} must split evenly over {world} processes x "
            f"{profile.grad_accum_steps} micro-batches"
        )
    steps = steps or profile.kd_steps or math.ceil(profile.kd_epochs * len(kd_pairs) / batch)
    loop, optimizer, schedule = _make_loop(
        run,
        teacher,
        student,
        tokenizer,
        kd_pairs,
        teacher_pairs,
        max_new_tokens,
        accelerator,
        steps,
    )
    timer, order = (
        PhaseTimer(accelerator.device),
        EpochOrder(len(kd_pairs), random.Random(f"order/{run.seed}")),
    )
    evaluations = Evaluations(evaluator, loop, timer, steps)
    log = StepLog(log_path, accelerator.is_main_process, profile.log_every, steps)
    try:
        evaluations.maybe(0)
        for step in range(1, steps + 1):
            rows = order.next_batch(batch)
            beta, gold = imitkd_coins(run, step, steps, len(rows))
            loss, targets = train_step(loop, optimizer, schedule, rows, step, gold, timer)
            seconds = {k: timer.last[k] for k in ("sampling", "teacher_scoring", "student_update")}
            entry = _step_entry(
                step, schedule.get_last_lr()[0], loss.item(), targets, accelerator, seconds
            )
            if beta is not None:
                entry["imitkd_beta"], entry["ground_truth_share"] = beta, sum(gold) / len(gold)
            log.add(entry)
            evaluations.maybe(step)
    finally:
        log.close()
    seconds = dict(timer.totals, total=time.perf_counter() - log.start)
    checksums = student_checksums(loop.plain, accelerator)
    return DistillResult(
        steps, log.entries, evaluations.scores, seconds, checksums, loop.continuation
    )


def _step_entry(step, lr, loss, targets: list[Targets], accelerator, seconds) -> dict:
    """The step's log line: loss, tokens, lengths, and the sampler's per-sequence statistics over
    every process's rows (switch rate, d at the switch, relative switch position, SKD
    replacements)."""

    def gathered(key):
        values = [t.stats[key].float() for t in targets if key in t.stats]
        return accelerator.gather(torch.cat(values)).cpu() if values else None

    lengths = accelerator.gather(
        torch.cat([t.response_mask.sum(-1).float() for t in targets])
    ).cpu()
    entry = dict(
        step=step,
        lr=lr,
        loss=loss,
        response_tokens=int(lengths.sum()),
        mean_response_length=float(lengths.mean()),
        seconds=seconds,
    )
    switched = gathered("switched")
    if switched is not None:
        on = switched.bool()
        entry.update(
            switch_rate=float(switched.mean()),
            d_at_switch=float(gathered("d_at_switch")[on].mean()) if on.any() else None,
            relative_switch_position=float(gathered("relative_switch_position")[on].mean())
            if on.any()
            else None,
            student_token_share=float(gathered("student_token_share").mean()),
        )
    replaced = gathered("replaced_tokens")
    if replaced is not None:
        entry["replacement_rate"] = float(replaced.sum() / lengths.sum().clamp(min=1))
    return entry
