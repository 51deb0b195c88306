"""Length groups side by side: an SFT step and a distillation step computed as one padded batch
(`length_groups=1`) and as groups of rows of similar length, each without the padding its rows
share (`length_groups=2, 4`). Same loss up to rounding; prints seconds and the speed-up over 1.

    python benchmarks/bench_padding.py --pair tiny-qwen --task synth_gsm
    python benchmarks/bench_padding.py --pair tiny-llama --task synth_summ --repeats 12

Uses the profile's prepared pair and real prompts and answers of the task at the profile's batch
sizes: the teacher SFT step as preparation trains it (bf16 autocast, eager attention on CPU) and
whole `distill.distill` steps (sampling included: it does not change) of off-policy and on-policy.
Settings alternate (A B C C B A ...); medians are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib import models  # noqa: E402
from adaswitch_lib.config import RunConfig, get_profile  # noqa: E402
from adaswitch_lib.data import load_profile_task, token_limits, tokenize_pairs  # noqa: E402
from adaswitch_lib.distill import distill  # noqa: E402
from adaswitch_lib.prepare import (
    CACHE_ROOT,
    collate,
    load_prepared,
    pair_folder_if_ready,
    sft_attention,  # noqa: E402
    sft_backward,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--task", default="synth_gsm")
    parser.add_argument(
        "--groups", default="1,2,4", help="length_groups to compare; the first is the baseline"
    )
    parser.add_argument(
        "--repeats", type=int, default=8, help="SFT steps (and KD steps / 2) per setting"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a cpu run's jobs use 1 each)"
    )
    parser.add_argument("--prepared", help="a prepared pair's folder (default: the profile's own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    folder = (
        Path(args.prepared)
        if args.prepared
        else pair_folder_if_ready(profile, args.pair, args.task, CACHE_ROOT)
    )
    if folder is None:
        sys.exit(
            f"no prepared {args.pair} / {args.task} for profile {args.profile}: run "
            f"`python -m adaswitch_lib prepare --profile {args.profile} --pair {args.pair} --task "
            f"{args.task}`"
        )
    teacher, student, tokenizer = load_prepared(folder, profile.dtype, student_dtype="float32")
    max_prompt, max_new = token_limits(profile, args.task)
    pairs = tokenize_pairs(
        tokenizer, load_profile_task(profile, args.task, "train")[:4000], max_prompt, max_new
    )
    kd = tokenize_pairs(tokenizer, load_profile_task(profile, args.task, "kd"), max_prompt, max_new)
    settings = [int(g) for g in args.groups.split(",")]
    sft_model = models.load_model(str(folder / "teacher"), "float32")
    sft_model.set_attn_implementation(sft_attention("cpu") or "sdpa")
    sft_model.train()
    batches = [
        random.Random(i).sample(pairs, profile.teacher_batch_size) for i in range(args.repeats)
    ]

    def sft(groups):
        start = time.perf_counter()
        for batch in batches:
            # groups == 0: what preparation did before, one batch through the model's own loss
            # (every position's logits)
            if groups == 0:
                ids, mask, labels = collate(batch, tokenizer.pad_token_id, "cpu")
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=profile.train_bf16):
                    sft_model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            else:
                sft_backward(
                    sft_model,
                    batch,
                    tokenizer.pad_token_id,
                    groups,
                    models.training_autocast("cpu", profile.train_bf16),
                )
            sft_model.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / len(batches)

    def kd_step(method, groups):
        run = RunConfig(
            profile=replace(profile, length_groups=groups),
            pair=args.pair,
            task=args.task,
            method=method,
        )
        fresh = models.load_model(str(folder / "student"), "float32")
        steps = max(2, args.repeats // 2)
        with contextlib.redirect_stdout(io.StringIO()):  # the loop's progress lines
            out = distill(run, teacher, fresh, tokenizer, kd, max_new_tokens=max_new, steps=steps)
        return out.seconds["total"] / steps

    cases = {
        f"teacher SFT step (batch {profile.teacher_batch_size})": sft,
        f"off-policy KD step (batch {profile.kd_batch_size})": lambda g: kd_step("off_policy", g),
        f"on-policy KD step (batch {profile.kd_batch_size})": lambda g: kd_step("on_policy", g),
    }
    print(
        f"{args.pair} / {args.task}, profile {args.profile}, {args.threads} thread(s), medians of "
        "3 alternations; "
        f"SFT 'own loss': one batch through the model's own loss, as preparation trained before"
    )
    print(
        f"{'':34}{'own loss':>10}"
        + "".join(f"{f'groups={g}':>10}" for g in settings)
        + f"   speed-up over groups={settings[0]} (and over own loss)"
    )
    for name, case in cases.items():
        tried = ([0] if case is sft else []) + settings
        seconds = {g: [] for g in tried}
        for round_ in range(3):
            for g in tried if round_ % 2 == 0 else tried[::-1]:
                seconds[g].append(case(g))
        median = {g: statistics.median(v) for g, v in seconds.items()}
        ratios = "  ".join(f"{median[settings[0]] / median[g]:.2f}x" for g in settings[1:])
        if 0 in median:
            ratios += "  (" + "  ".join(f"{median[0] / median[g]:.2f}x" for g in settings) + ")"
        own = f"{median[0]:9.3f}s" if 0 in median else f"{'-':>10}"
        print(
            f"{name:34}{own}" + "".join(f"{median[g]:9.3f}s" for g in settings) + "   " + ratios,
            flush=True,
        )


if __name__ == "__main__":
    main()
