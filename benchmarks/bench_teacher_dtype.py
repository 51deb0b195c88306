"""The frozen teacher's work in a cpu distillation run, with its weights in bf16 (the cpu profile's
`dtype`) against fp32, side by side: a decode step and a draft-verify pass (the samplers), and a
scoring pass over a batch of responses (the methods that do not keep the sampler's logits). Real
prompts and answers of the task at the profile's KD batch; the two dtypes take turns (the order
reversed every other round) and the medians are printed, with the ratio bf16 / fp32 (> 1: fp32 is
faster).

    python benchmarks/bench_teacher_dtype.py --pair tiny-qwen --task synth_gsm
    python benchmarks/bench_teacher_dtype.py --threads 2 --repeats 7

Needs the prepared pair (`python -m adaswitch_lib prepare --profile cpu ...`).
"""

from __future__ import annotations

import argparse
import platform
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
from adaswitch_lib.prepare import CACHE_ROOT, load_prepared, pair_folder_if_ready  # noqa: E402
from adaswitch_lib.targets import ground_truth_targets  # noqa: E402


def work(profile, tokenizer, task):
    """name -> function(model) doing the work once; a decode function returns its seconds per
    step (the prompt's pass is not a step)."""
    max_prompt, max_new = token_limits(profile, task)
    pairs = tokenize_pairs(
        tokenizer, load_profile_task(profile, task, "train")[:64], max_prompt, max_new
    )
    targets = ground_truth_targets(pairs[: profile.kd_batch_size], tokenizer.pad_token_id)
    vocab, rows = len(tokenizer), targets.sequences.shape[0]

    @torch.no_grad()
    def decode(model, steps: int, width: int):
        prompt = targets.sequences[:, : targets.prompt_length]
        mask = targets.attention_mask[:, : targets.prompt_length]
        dec = Decoder(model, prompt, mask, vocab, steps * width)
        start = time.perf_counter()
        for k in range(0, steps * width, width):
            dec.feed(targets.responses[:, k : k + width], all_logits=width > 1)
        return (time.perf_counter() - start) / steps

    @torch.no_grad()
    def score(model):
        response_logits(model, targets, vocab)

    return {
        f"decode step (batch {rows})": lambda model: decode(model, 16, 1),
        f"verify pass, 9 tokens (batch {rows})": lambda model: decode(model, 4, 9),
        f"scoring pass (batch {rows}, {targets.responses.shape[1]} response tokens)": score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--task", default="synth_gsm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (run_all: 1 a job)")
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
    teachers = {
        "bf16": load_prepared(folder, "bfloat16")[0],
        "fp32": load_prepared(folder, "float32")[0],
    }
    tokenizer = load_prepared(folder, "float32")[2]
    jobs = work(profile, tokenizer, args.task)
    seconds = {(name, dtype): [] for name in jobs for dtype in teachers}
    for repeat in range(args.repeats + 1):  # the first round warms up
        order = list(teachers) if repeat % 2 == 0 else list(teachers)[::-1]
        for dtype in order:
            for name, job in jobs.items():
                start = time.perf_counter()
                inner = job(teachers[dtype])
                if repeat:
                    seconds[name, dtype].append(inner or time.perf_counter() - start)
    print(
        f"\n{args.profile}:{args.pair}:{args.task}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), median of {args.repeats}\n"
    )
    print("| teacher work | bf16 weights | fp32 weights | bf16 / fp32 |\n|---|---|---|---|")
    for name in jobs:
        bf16, fp32 = (statistics.median(seconds[name, dtype]) for dtype in teachers)
        print(f"| {name} | {bf16 * 1000:.2f} ms | {fp32 * 1000:.2f} ms | {bf16 / fp32:.2f} |")


if __name__ == "__main__":
    main()
