"""What makes the cpu profile's numbers move between machines? Train the cpu profile's tiny teacher
for a few steps under different settings, each in its own process, and compare the weights.

    python benchmarks/determinism.py                 # threads 1 vs 2, bf16 autocast vs fp32, bf16
    ISA capped
    python benchmarks/determinism.py --steps 40 --task synth_summ

Settings: torch threads (1 or 2), bf16 autocast on or off (the profile's `train_bf16`), and oneDNN
limited to AVX-512 without the BF16 instructions (`ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`), which
is what a CPU without AVX512-BF16 (or AMX) runs. Identical checksums mean the setting does not
change the prepared models; different ones mean results depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib import kernels  # noqa: E402

SETTINGS = [  # (label, threads, bf16, environment)
    ("1 thread, bf16 autocast", 1, True, {}),
    ("2 threads, bf16 autocast", 2, True, {}),
    (
        "1 thread, bf16 autocast, no AVX512-BF16",
        1,
        True,
        {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"},
    ),
    ("1 thread, fp32", 1, False, {}),
    ("2 threads, fp32", 2, False, {}),
    ("1 thread, fp32, no AVX512-BF16", 1, False, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}),
    # what an older CPU runs: fp32 products take other kernels, so other roundings from step one
    (
        "1 thread, fp32, AVX2 kernels",
        1,
        False,
        {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    ),
    # every library's kernels pinned to AVX2 (a profile's cpu_kernels="avx2", kernels.py)
    ("1 thread, fp32, every kernel at AVX2", 1, False, kernels.PINNED["avx2"]),
    # each library alone, moved off this CPU's default, to see which ones decide the bits
    ("1 thread, fp32, PyTorch kernels unvectorised", 1, False, {"ATEN_CPU_CAPABILITY": "default"}),
    ("1 thread, fp32, MKL at SSE2", 1, False, {"MKL_CBWR": "COMPATIBLE"}),
]


def child(task: str, steps: int, threads: int, bf16: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    from adaswitch_lib import models
    from adaswitch_lib.config import get_profile
    from adaswitch_lib.data import (
        format_completion,
        format_prompt,
        load_profile_task,
        token_limits,
        tokenize_pairs,
    )
    from adaswitch_lib.prepare import sft_attention, supervised_finetune

    profile = get_profile("cpu")
    train = load_profile_task(profile, task, "train")
    val = load_profile_task(profile, task, "validation")[:64]
    tokenizer = models.train_tokenizer(
        [format_prompt(e) + format_completion(e) for e in train], profile.tokenizer_vocab
    )
    teacher = models.tiny_model(
        "tiny-qwen", profile.teacher_shape, tokenizer, profile.dropout, seed=1
    )
    max_prompt, max_new = token_limits(profile, task)
    history = supervised_finetune(
        teacher,
        tokenize_pairs(tokenizer, train, max_prompt, max_new),
        tokenize_pairs(tokenizer, val, max_prompt, max_new),
        steps,
        profile.teacher_lr,
        profile.teacher_batch_size,
        tokenizer.pad_token_id,
        profile.warmup_ratio,
        eval_every=steps,
        log_every=10**9,
        autocast=models.training_autocast("cpu", bf16),
        attention=sft_attention("cpu"),
        length_groups=profile.length_groups,
    )
    checksum = sum(float(p.double().sum()) for p in teacher.parameters())
    return dict(
        checksum=checksum,
        last_train_loss=history["train_loss"][-1],
        seconds=history["seconds"],
        capability=torch.backends.cpu.get_cpu_capability(),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="synth_gsm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only", default="", help="the settings whose label contains this")
    parser.add_argument("--child", nargs=2, metavar=("THREADS", "BF16"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.task, args.steps, int(args.child[0]), args.child[1] == "1")))
        return
    print(
        f"cpu profile teacher, {args.task}, {args.steps} steps from the same seed; each setting in "
        "its own process\n"
    )
    print(
        "| setting | weight checksum | last train loss | seconds | PyTorch kernels |\n"
        "|---|---|---|---|---|"
    )
    for label, threads, bf16, env in SETTINGS:
        if args.only not in label:
            continue
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--task",
                args.task,
                "--steps",
                str(args.steps),
                "--child",
                str(threads),
                "1" if bf16 else "0",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads), **env},
        )
        if out.returncode:
            print(f"| {label} | failed: {out.stderr.strip().splitlines()[-1]} | | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {label} | {r['checksum']:.10f} | {r['last_train_loss']:.6f} | {r['seconds']:.1f} "
            f"| {r['capability']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
