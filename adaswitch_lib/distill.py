"""The one distillation loop for every method of Table 1.

Each step: build the batch's target sequences as the method's row in `methods.py` says (ground
truth, teacher samples, student samples, a per-sequence mix, SKD or AdaSwitch), get the teacher's
logits on them (reused from the sampler for SKD and AdaSwitch, one scoring pass otherwise), and
take one AdamW step on the loss. `accelerate` owns the device, mixed precision and distribution,
so the same function runs in a notebook, from the command line and under `accelerate launch`:

    python -m adaswitch_lib distill --profile smoke --pair tiny-qwen --task synth_gsm --method adaswitch
    accelerate launch --num_processes 2 --cpu -m adaswitch_lib distill --profile smoke ...

Every draw is seeded by (seed, step, row), never by the process, so a run's targets do not depend
on how many processes or micro-batches share a step.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaswitch_lib.config import RunConfig
from adaswitch_lib.data import left_pad
from adaswitch_lib.decoding import length_groups
from adaswitch_lib.errors import KitError
from adaswitch_lib.losses import distill_loss, nll_loss, position_weights
from adaswitch_lib.methods import EARLY_METHODS, get_method
from adaswitch_lib.sampler import SamplerConfig, Targets, sample_targets, shared_vocab_size

Pair = tuple[list[int], list[int]]  # (prompt ids, response ids ending in EOS)


def sampler_config(run: RunConfig, tokenizer, max_new_tokens: int, keep_teacher_logits: bool = False) -> SamplerConfig:
    """The sampler settings of a run: the profile's temperatures, the method's knobs."""
    p = run.profile
    return SamplerConfig(max_new_tokens=max_new_tokens, student_temperature=p.student_temperature,
                         student_top_p=p.student_top_p, teacher_temperature=p.teacher_temperature,
                         teacher_top_p=p.teacher_top_p, adaswitch_k=run.adaswitch_k,
                         adaswitch_window=run.adaswitch_window, adaswitch_floor=run.adaswitch_floor,
                         divergence=run.divergence, jsd_beta=run.jsd_beta, skew_alpha=run.skew_alpha,
                         skd_rule=run.skd_rule, skd_top_k=run.skd_top_k, skd_top_p=run.skd_top_p,
                         teacher_continuation=run.teacher_continuation,
                         keep_teacher_logits=keep_teacher_logits, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer))


# ---------------------------------------------------------------------------- targets
def ground_truth_targets(pairs: list[Pair], pad_token_id: int, device=None) -> Targets:
    """Given responses as Targets: prompts left-padded, responses right-padded (like a sampler's)."""
    ids, mask = left_pad([p for p, _ in pairs], pad_token_id, device)
    return _after_prompts(ids, mask, [r for _, r in pairs], pad_token_id)


def _after_prompts(ids, mask, responses: list[list[int]], pad_token_id: int) -> Targets:
    """Targets from left-padded prompt tensors and the responses that follow them (right-padded)."""
    width = max(len(r) for r in responses)
    tokens = torch.full((len(responses), width), pad_token_id, dtype=torch.long, device=ids.device)
    response_mask = torch.zeros_like(tokens)
    for row, response in enumerate(responses):
        tokens[row, :len(response)] = torch.tensor(response, dtype=torch.long)
        response_mask[row, :len(response)] = 1
    return Targets(torch.cat([ids, tokens], 1), torch.cat([mask, response_mask], 1), response_mask, ids.shape[1])


def merge_targets(parts: list[tuple[list[int], Targets]], batch: int, pad_token_id: int) -> Targets:
    """Rows of several Targets over the same left-padded prompts into one batch (ImitKD's mix)."""
    parts = [(rows, t) for rows, t in parts if rows]
    prompt = parts[0][1].prompt_length
    width = max(t.response_mask.shape[1] for _, t in parts)
    like = parts[0][1].sequences
    sequences = like.new_full((batch, prompt + width), pad_token_id)
    attention = like.new_zeros((batch, prompt + width))
    for rows, t in parts:
        index = torch.tensor(rows, device=like.device)
        n = t.sequences.shape[1]
        sequences[index, :n], attention[index, :n] = t.sequences, t.attention_mask
    return Targets(sequences, attention, attention[:, prompt:].clone(), prompt)


def teacher_responses(teacher, tokenizer, prompts: list[list[int]], cfg: SamplerConfig, seed: int,
                      batch_size: int = 32) -> list[list[int]]:
    """SeqKD's targets: one teacher sample per prompt (its temperature / top-p), up to and with EOS."""
    device = next(teacher.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start:start + batch_size], tokenizer.pad_token_id, device)
        t = sample_targets("teacher", None, teacher, ids, mask, cfg, torch.Generator().manual_seed(seed * 7919 + start))
        out += [row[m.bool()].tolist() for row, m in zip(t.responses, t.response_mask)]
    return out


def step_noise(seed: int, step: int, rows: int, max_new_tokens: int) -> torch.Tensor:
    """The uniform numbers behind every draw of one step [3, rows, max_new_tokens] (student, teacher,
    speculative residual)."""
    return torch.rand(3, rows, max_new_tokens, generator=torch.Generator().manual_seed(seed * 1_000_003 + step))


def imitkd_beta(run: RunConfig, step: int, steps: int) -> float:
    """ImitKD's probability of ground truth at a step: linear from imitkd_beta_start to 0."""
    return run.imitkd_beta_start * (1 - step / steps)


def build_targets(method: str, run: RunConfig, student, teacher, pairs: list[Pair], noise: torch.Tensor,
                  cfg: SamplerConfig, device, *, ground_truth_rows: list[bool] | None = None,
                  teacher_pairs: list[Pair] | None = None, gather=None) -> Targets:
    """The target sequences of one (micro-)batch for a method (see methods.py). `noise` holds these
    rows' uniform numbers; `ground_truth_rows` is ImitKD's per-row coin; `teacher_pairs` SeqKD's;
    `gather` keeps several processes' samplers calling forward together (`rank_gather`)."""
    source = get_method(method).targets
    pad = cfg.pad_token_id
    if source == "ground_truth":
        return ground_truth_targets(pairs, pad, device)
    if source == "teacher_samples":
        if teacher_pairs is None:
            raise KitError("seqkd needs the teacher's samples of the KD prompts (prepare.seqkd_pairs)")
        return ground_truth_targets(teacher_pairs, pad, device)
    ids, mask = left_pad([p for p, _ in pairs], pad, device)
    if source == "mixed":
        gold = [i for i, g in enumerate(ground_truth_rows) if g]
        sampled = [i for i, g in enumerate(ground_truth_rows) if not g]
        index = torch.tensor(gold, dtype=torch.long, device=device)
        parts = [(gold, _after_prompts(ids[index], mask[index], [pairs[i][1] for i in gold], pad))] if gold else []
        if sampled:
            rows = torch.tensor(sampled, device=device)
            parts.append((sampled, sample_targets("student", student, None, ids[rows], mask[rows], cfg,
                                                  noise=noise[:, sampled], gather=gather)))
        elif gather is not None:  # no row of ours samples, but the other processes' samplers need us
            sample_targets("student", student, None, ids[:1], mask[:1], cfg, noise=noise[:, :1], gather=gather)
        return merge_targets(parts, len(pairs), pad)
    return sample_targets(source, student, teacher, ids, mask, cfg, noise=noise, gather=gather)


def is_sharded(accelerator) -> bool:
    """True under FSDP or DeepSpeed ZeRO-3: the student's weights are split over the processes, so
    each of its forward passes needs every process (evaluation included)."""
    from accelerate.utils import DistributedType
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = accelerator.state.deepspeed_plugin if accelerator.distributed_type == DistributedType.DEEPSPEED else None
    return plugin is not None and plugin.zero_stage == 3


def rank_gather(accelerator):
    """The samplers' `gather` over the run's processes (None for one process): every rank then calls
    forward as often as the others while any rank samples, as FSDP and ZeRO-3 need."""
    if accelerator.num_processes == 1:
        return None
    return lambda values: accelerator.gather(values[None])


# ---------------------------------------------------------------------------- logits and loss
def response_logits(model, targets: Targets, vocab: int) -> torch.Tensor:
    """The model's next-token logits at every response position [B, N, vocab] (prompt positions are
    never sent through the output head). Position ids come from the mask: prompts are left-padded."""
    n = targets.response_mask.shape[1]
    positions = (targets.attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=targets.sequences, attention_mask=targets.attention_mask, position_ids=positions,
                logits_to_keep=n + 1, use_cache=False)
    return out.logits[:, :-1, :vocab]


def target_loss(method: str, run: RunConfig, student_logits, teacher_logits, targets: Targets,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """The method's loss on its targets: NLL, or D(p_T || p_S) token by token."""
    if get_method(method).loss == "nll":
        return nll_loss(student_logits, targets.responses, targets.response_mask, run.loss_reduction, weights)
    return distill_loss(student_logits, teacher_logits, targets.response_mask, run.divergence, run.loss_reduction,
                        beta=run.jsd_beta, alpha=run.skew_alpha, weights=weights)


@dataclass
class DistillResult:
    steps: int
    log: list[dict]                         # one dict per step (also written as JSONL)
    evaluations: list[dict]                 # what the evaluator returned, with its step
    seconds: dict = field(default_factory=dict)   # whole loop and per phase
    student_checksums: list[float] = field(default_factory=list)  # one per process: equal under DDP


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_eval_step(profile, step: int, steps: int, dense_early: bool = True) -> bool:
    """Every eval_every steps, the first and the last; densely early on for the methods of Figures 5
    and 8 (the others' early points feed no figure: skipping them saves a sixth of a cpu run)."""
    if step in (0, steps):
        return True
    every = profile.eval_every_early if dense_early and step <= profile.eval_early_steps else profile.eval_every
    return step % every == 0


def mixed_precision(choice: str = "auto", cuda: bool | None = None, bf16_supported: bool | None = None) -> str:
    """accelerate's mixed_precision for a profile's `kd_mixed_precision`: "auto" is bf16 on CUDA,
    fp16 (with loss scaling) on GPUs without bf16 such as Colab's T4, and none on CPU."""
    if choice != "auto":
        return choice
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "no"
    return "bf16" if (torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported) else "fp16"


def make_accelerator(profile):
    """The Accelerator a run uses: the GPU when there is one, the profile's mixed precision."""
    from accelerate import Accelerator
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision(profile.kd_mixed_precision))


def distill(run: RunConfig, teacher, student, tokenizer, kd_pairs: list[Pair], *, max_new_tokens: int,
            teacher_pairs: list[Pair] | None = None, evaluator=None, log_path: Path | None = None,
            accelerator=None, steps: int | None = None) -> DistillResult:
    """Distil `teacher` into `student` (in place) on the KD prompts with the run's method.
    `evaluator(step, student) -> dict` runs on the main process at the profile's evaluation steps
    (on every process under FSDP / ZeRO-3, where it must be `synced`; the main process keeps it);
    `teacher_pairs` are SeqKD's targets, aligned with `kd_pairs`."""
    from transformers import get_linear_schedule_with_warmup
    profile, method = run.profile, get_method(run.method)
    accelerator = accelerator or make_accelerator(profile)
    world, rank = accelerator.num_processes, accelerator.process_index
    batch, accum = profile.kd_batch_size, profile.grad_accum_steps
    if batch % (world * accum):
        raise KitError(f"kd_batch_size {batch} must split evenly over {world} processes x {accum} micro-batches")
    steps = steps or profile.kd_steps or math.ceil(profile.kd_epochs * len(kd_pairs) / batch)
    device = accelerator.device
    vocab = shared_vocab_size(student, teacher, len(tokenizer))
    cfg = sampler_config(run, tokenizer, max_new_tokens, keep_teacher_logits=method.sampler_keeps_teacher_logits)
    teacher = teacher.to(device).eval().requires_grad_(False)
    torch.manual_seed(run.seed)
    decay = [p for n, p in student.named_parameters() if p.dim() >= 2]
    other = [p for n, p in student.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                                  lr=profile.kd_lr)
    # linear warm-up then linear decay, as the SKD code base the paper's baselines come from
    schedule = get_linear_schedule_with_warmup(optimizer, int(profile.warmup_ratio * steps), steps)
    # the schedule stays ours: accelerate would step a prepared one once per process each step
    model, optimizer = accelerator.prepare(student, optimizer)
    plain = accelerator.unwrap_model(model)
    order_rng, order, cursor = random.Random(f"order/{run.seed}"), [], 0
    local = batch // world
    gather = rank_gather(accelerator)
    log, evaluations, totals = [], [], dict(sampling=0.0, teacher_scoring=0.0, student_update=0.0, evaluation=0.0)
    log_file = open(log_path, "w") if (log_path and accelerator.is_main_process) else None
    start = time.perf_counter()

    sharded = is_sharded(accelerator)

    def evaluate_now(step):  # on the main process; on every process when the student is sharded
        if evaluator is not None and (accelerator.is_main_process or sharded):
            t0 = time.perf_counter()
            scores = evaluator(step, plain)
            if accelerator.is_main_process:
                evaluations.append(dict(step=step, **scores))
            totals["evaluation"] += time.perf_counter() - t0
        accelerator.wait_for_everyone()

    try:
        dense_early = run.method in EARLY_METHODS
        if _is_eval_step(profile, 0, steps, dense_early):
            evaluate_now(0)
        for step in range(1, steps + 1):
            if cursor + batch > len(order):  # a fresh shuffle each epoch, identical on every process
                order, cursor = list(range(len(kd_pairs))), 0
                order_rng.shuffle(order)
            rows = order[cursor:cursor + batch]
            cursor += batch
            noise = step_noise(run.seed, step, batch, max_new_tokens)
            beta = imitkd_beta(run, step - 1, steps) if method.targets == "mixed" else None
            coins = random.Random(f"imitkd/{run.seed}/{step}")
            gold = [coins.random() < beta for _ in rows] if beta is not None else None
            mine = range(rank * local, (rank + 1) * local)
            micro = [list(mine)[i::accum] for i in range(accum)]  # strided: every micro-batch sees a spread
            # 1. targets for every micro-batch, in eval mode (no dropout)
            _sync(device), model.eval()
            t0 = time.perf_counter()
            targets = [build_targets(run.method, run, plain, teacher, [kd_pairs[rows[i]] for i in part],
                                     noise[:, part], cfg, device,
                                     ground_truth_rows=[gold[i] for i in part] if gold else None,
                                     teacher_pairs=[teacher_pairs[rows[i]] for i in part] if teacher_pairs else None,
                                     gather=gather)
                       for part in micro]
            # scoring and update go over rows grouped by length, each group trimmed of its shared padding
            parts = [g for t in targets for g in length_groups(t, profile.length_groups)]
            _sync(device)
            t1 = time.perf_counter()
            # 2. teacher logits: kept by the sampler (SKD, AdaSwitch) or one scoring pass
            teacher_logits = []
            for t in parts:
                if not method.needs_teacher_logits:
                    teacher_logits.append(None)
                elif t.teacher_logits is not None:
                    teacher_logits.append(t.teacher_logits)
                else:
                    with torch.no_grad():
                        teacher_logits.append(response_logits(teacher, t, vocab))
            _sync(device)
            t2 = time.perf_counter()
            # 3. the update; the normaliser counts every target token of the step, on every process
            counts = torch.tensor([sum(int(t.response_mask.sum()) for t in targets)], device=device)
            total_tokens = int(accelerator.reduce(counts, reduction="sum").item())
            model.train()
            step_loss = torch.zeros((), device=device)
            for k, (t, t_logits) in enumerate(zip(parts, teacher_logits)):
                # DDP averages gradients over processes: scale by `world` so the sum is the global loss
                weights = world * position_weights(t.response_mask, run.loss_reduction, total_rows=batch,
                                                   total_tokens=total_tokens)
                # gradients are all-reduced once, after the last micro-batch
                with accelerator.no_sync(model) if k < len(parts) - 1 else contextlib.nullcontext():
                    with accelerator.autocast():
                        loss = target_loss(run.method, run, response_logits(model, t, vocab), t_logits, t, weights)
                    accelerator.backward(loss)
                step_loss += loss.detach()
            step_loss = accelerator.reduce(step_loss, reduction="mean")
            if not torch.isfinite(step_loss):
                raise KitError(f"step {step}: the {run.method} loss is {step_loss.item()} (not finite); no record "
                               f"written; lower kd_lr or try another seed")
            accelerator.clip_grad_norm_(model.parameters(), profile.max_grad_norm)
            optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
            _sync(device)
            t3 = time.perf_counter()
            totals["sampling"] += t1 - t0
            totals["teacher_scoring"] += t2 - t1
            totals["student_update"] += t3 - t2
            entry = _step_entry(step, schedule.get_last_lr()[0], step_loss.item(), targets, accelerator,
                                dict(sampling=t1 - t0, teacher_scoring=t2 - t1, student_update=t3 - t2))
            if beta is not None:
                entry["imitkd_beta"], entry["ground_truth_share"] = beta, sum(gold) / len(gold)
            log.append(entry)
            if log_file:
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
            if accelerator.is_main_process and (step % profile.log_every == 0 or step == steps):
                print(f"    step {step}/{steps}  loss {entry['loss']:.4f}  {time.perf_counter() - start:.0f} s",
                      flush=True)
            if _is_eval_step(profile, step, steps, dense_early):
                evaluate_now(step)
    finally:
        if log_file:
            log_file.close()
    totals["total"] = time.perf_counter() - start
    with torch.no_grad():  # equal on every process when DDP kept the replicas in step; per shard when sharded
        local = [p.to_local() if hasattr(p, "to_local") else p for p in plain.parameters()]  # FSDP2: DTensors
        checksum = torch.tensor([sum(float(p.double().sum()) for p in local)], device=device, dtype=torch.float64)
    checksums = accelerator.gather(checksum).tolist()
    return DistillResult(steps, log, evaluations, totals, checksums)


def _step_entry(step, lr, loss, targets: list[Targets], accelerator, seconds) -> dict:
    """The step's log line: loss, tokens, lengths, and the sampler's per-sequence statistics over
    every process's rows (switch rate, d at the switch, relative switch position, SKD replacements)."""
    def gathered(key):
        values = [t.stats[key].float() for t in targets if key in t.stats]
        return accelerator.gather(torch.cat(values)).cpu() if values else None

    lengths = accelerator.gather(torch.cat([t.response_mask.sum(-1).float() for t in targets])).cpu()
    entry = dict(step=step, lr=lr, loss=loss, response_tokens=int(lengths.sum()),
                 mean_response_length=float(lengths.mean()), seconds=seconds)
    switched = gathered("switched")
    if switched is not None:
        on = switched.bool()
        entry.update(switch_rate=float(switched.mean()),
                     d_at_switch=float(gathered("d_at_switch")[on].mean()) if on.any() else None,
                     relative_switch_position=float(gathered("relative_switch_position")[on].mean()) if on.any() else None,
                     student_token_share=float(gathered("student_token_share").mean()))
    replaced = gathered("replaced_tokens")
    if replaced is not None:
        entry["replacement_rate"] = float(replaced.sum() / lengths.sum().clamp(min=1))
    return entry
