"""transformers' attention implementations side by side on a prepared pair: PyTorch's SDPA kernels
against the plain ("eager") matmul-softmax-matmul, in what a cpu run pays for -- a teacher SFT step
(bf16 autocast, as preparation trains), a teacher scoring pass (bf16 weights), a student update and
one decode step and one draft-verify pass. Prints seconds and the ratio SDPA / eager (> 1: eager
is faster).

    python benchmarks/bench_attention.py --pair tiny-qwen --task synth_gsm
    python benchmarks/bench_attention.py --pair tiny-llama --task synth_summ --threads 1 --repeats 5

Real prompts and answers of the task at the profile's batch sizes; the implementations take turns
(the order reversed every other round) and the medians are printed. From these numbers
`prepare.sft_attention` trains with eager on CPU (the SFT step is where it pays). The kit's former
short-query attention for bf16 decode steps was dropped when whole distillation steps stopped
gaining from it (docs/performance.md, 2026-12-02).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib.config import get_profile  # noqa: E402
from adaswitch_lib.data import load_profile_task, token_limits, tokenize_pairs  # noqa: E402
from adaswitch_lib.decoding import Decoder  # noqa: E402
from adaswitch_lib.distill import response_logits  # noqa: E402
from adaswitch_lib.prepare import CACHE_ROOT, collate, load_prepared, pair_folder_if_ready  # noqa: E402
from adaswitch_lib.targets import ground_truth_targets  # noqa: E402

IMPLEMENTATIONS = ("sdpa", "eager")


def cases(profile, teacher_bf16, teacher_fp32, student, tokenizer, task):
    """name -> a function that does the work once."""
    max_prompt, max_new = token_limits(profile, task)
    pairs = tokenize_pairs(
        tokenizer, load_profile_task(profile, task, "train")[:64], max_prompt, max_new
    )
    pad, vocab = tokenizer.pad_token_id, len(tokenizer)
    sft = collate(pairs[: profile.teacher_batch_size], pad, "cpu")
    kd = collate(pairs[: profile.kd_batch_size], pad, "cpu")
    targets = ground_truth_targets(pairs[: profile.kd_batch_size], pad)

    def train(model, batch, bf16):
        ids, mask, labels = batch
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def score(model):
        model.eval()
        response_logits(model, targets, vocab)

    @torch.no_grad()
    def decode(model, steps=8, width=1):
        model.eval()
        prompt = targets.sequences[:, : targets.prompt_length]
        dec = Decoder(
            model, prompt, targets.attention_mask[:, : targets.prompt_length], vocab, steps * width
        )
        start = time.perf_counter()
        for k in range(0, steps * width, width):
            dec.feed(targets.responses[:, k : k + width], all_logits=width > 1)
        return (time.perf_counter() - start) / steps  # the prompt's pass is not a decode step

    return {
        f"teacher SFT step (batch {len(sft[0])}, bf16 autocast)": lambda: train(
            teacher_fp32, sft, True
        ),
        f"teacher scoring pass (batch {targets.sequences.shape[0]}, bf16 weights)": lambda: score(
            teacher_bf16
        ),
        f"student update (batch {targets.sequences.shape[0]}, fp32)": lambda: train(
            student, kd, False
        ),
        "teacher decode step (bf16 weights)": lambda: decode(teacher_bf16),
        "teacher verify pass, 9 tokens (bf16 weights)": lambda: decode(
            teacher_bf16, steps=3, width=9
        ),
        "student decode step (fp32)": lambda: decode(student),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--task", default="synth_gsm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a cpu run's jobs use 1 each)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    folder = pair_folder_if_ready(profile, args.pair, args.task, Path(CACHE_ROOT))
    if folder is None:
        raise SystemExit(
            f"no prepared {args.pair} on {args.task} for profile {args.profile}: run `python -m "
            f"adaswitch_lib prepare --profile {args.profile} --pair {args.pair} --task "
            f"{args.task}` first"
        )
    teacher_bf16, student, tokenizer = load_prepared(folder, "bfloat16", student_dtype="float32")
    teacher_fp32 = load_prepared(folder, "float32")[0]
    work = cases(profile, teacher_bf16, teacher_fp32, student, tokenizer, args.task)
    seconds = {(name, impl): [] for name in work for impl in IMPLEMENTATIONS}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for impl in IMPLEMENTATIONS if repeat % 2 == 0 else IMPLEMENTATIONS[::-1]:
            for model in (teacher_bf16, teacher_fp32, student):
                model.set_attn_implementation(impl)
            for name, run in work.items():
                start = time.perf_counter()
                inner = run()
                if repeat:
                    seconds[(name, impl)].append(
                        inner if inner is not None else time.perf_counter() - start
                    )
    print(
        f"\n{args.profile}:{args.pair}:{args.task}, {args.threads} thread(s), median of "
        f"{args.repeats}\n"
    )
    print("| work | SDPA | eager | SDPA / eager |\n|---|---|---|---|")
    for name in work:
        sdpa, eager = (statistics.median(seconds[(name, impl)]) for impl in IMPLEMENTATIONS)
        print(f"| {name} | {sdpa * 1000:.1f} ms | {eager * 1000:.1f} ms | {sdpa / eager:.2f} |")


if __name__ == "__main__":
    main()
