"""GPU seconds of a Hub profile's jobs from shapes and tokens: the dry run's estimate before any
run of the profile has finished (finished runs' own timings replace it).

    python -m adaswitch_lib.runtime --profile colab --gpu l4

A roofline, not a measurement: a decode step reads every weight once (at HALF_BANDWIDTH of the
GPU's memory bandwidth), a forward over T tokens costs 2 P T FLOPs and a backward twice that (at
MATMUL_EFFICIENCY of the GPU's dense 16-bit peak), with every row at the profile's full response
length (random stops aside, a batch decodes until its longest row ends). docs/gpu.md says what it
gives and what it leaves out; a GPU run is what calibrates it.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from adaswitch_lib.config import (
    Profile,
    add_profile_options,
    get_profile,
    profile_overrides_from_args,
)
from adaswitch_lib.data import token_limits
from adaswitch_lib.errors import KitError
from adaswitch_lib.methods import METHODS
from adaswitch_lib.models import pair_shapes
from adaswitch_lib.plan import claimed, run_seeds

MATMUL_EFFICIENCY = 0.4  # share of the dense peak that training matmuls reach
HALF_BANDWIDTH = 0.6  # share of the memory bandwidth a decode step's weight reads reach


@dataclass(frozen=True)
class Speed:
    tflops: float  # dense 16-bit tensor-core peak
    bandwidth_gbs: float  # memory bandwidth, GB/s


SPEEDS = {  # the vendors' data sheets (dense, no sparsity)
    "t4": Speed(65, 320),
    "l4": Speed(121, 300),
    "a100-40": Speed(312, 1555),
    "a100-80": Speed(312, 2039),
    "h100": Speed(989, 3350),
}
# the samplers that decode with the teacher too (worst case: every position)
TWO_MODEL = ("skd", "adaswitch")
# (train, test) examples of the Hub tasks as the kit splits them (GSM8K's validation carved from
# train; DialogSum's test has 500 dialogues)
SPLIT_SIZES = {"gsm8k": (7000, 1319), "dialogsum": (12460, 500)}


def detected_gpu() -> str:
    """The SPEEDS key of this machine's GPU; "a100-80" without one (a dry run on a laptop)."""
    import torch

    if not torch.cuda.is_available():
        return "a100-80"
    name = torch.cuda.get_device_name(0)
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    for key, mark in (("t4", "T4"), ("l4", "L4"), ("h100", "H100")):
        if mark in name:
            return key
    return "a100-80" if gib > 50 else "a100-40"


def kd_steps(profile: Profile) -> int:
    return profile.kd_steps or math.ceil(profile.kd_epochs * profile.n_kd / profile.kd_batch_size)


def _matmul_seconds(flops: float, speed: Speed) -> float:
    return flops / (speed.tflops * 1e12 * MATMUL_EFFICIENCY)


def _decode_seconds(steps: int, weight_bytes: float, speed: Speed) -> float:
    return steps * weight_bytes / (speed.bandwidth_gbs * 1e9 * HALF_BANDWIDTH)


def distill_seconds(profile: Profile, pair: str, task: str, method: str, gpu: str) -> float:
    """One distillation run: its KD steps (sampling, teacher scoring, student update)."""
    speed = SPEEDS[gpu]
    teacher, student = (shape.parameters for shape in pair_shapes(profile, pair))
    prompt, new = token_limits(profile, task)
    tokens = profile.kd_batch_size * (prompt + new)
    backward = 3 if profile.gradient_checkpointing else 2  # recomputing a forward costs one more
    step = _matmul_seconds(2 * teacher * tokens + 2 * (1 + backward) * student * tokens, speed)
    if method in ("on_policy", "imitkd", *TWO_MODEL):  # the student samples (fp32 weights)
        step += _decode_seconds(new, 4 * student, speed)
    if method in TWO_MODEL:  # and the frozen 16-bit teacher decodes beside it
        step += _decode_seconds(new, 2 * teacher, speed)
    once = 0.0
    if method == "seqkd":  # the teacher's samples, made once before training
        batches = math.ceil(profile.n_kd / profile.eval_batch_size)
        once = _decode_seconds(batches * new, 2 * teacher, speed)
    return once + kd_steps(profile) * step


def prepare_seconds(profile: Profile, pair: str, task: str, gpu: str) -> float:
    """The teacher's SFT and the greedy evaluation of the teacher and the base student."""
    speed = SPEEDS[gpu]
    teacher, student = (shape.parameters for shape in pair_shapes(profile, pair))
    prompt, new = token_limits(profile, task)
    train, test = SPLIT_SIZES[task]
    steps = math.ceil(profile.teacher_epochs * train / profile.teacher_batch_size)
    steps = profile.teacher_steps or steps
    # LoRA computes no weight gradients of the frozen weights: about one backward pass fewer
    passes = (3 if profile.teacher_sft == "full" else 2) + profile.gradient_checkpointing
    sft = _matmul_seconds(
        2 * passes * teacher * steps * profile.teacher_batch_size * (prompt + new), speed
    )
    test = min(test, profile.max_eval_examples or test)
    batches = math.ceil(test / profile.eval_batch_size)
    evaluation = _decode_seconds(batches * new, 4 * (teacher + student), speed)
    return sft + evaluation


def table(profile: Profile, gpu: str):
    """Estimated hours of every preparation and distillation job of the profile's Table 1."""
    import pandas as pd

    if gpu not in SPEEDS:
        raise KitError(f"unknown GPU {gpu!r}; valid names: {', '.join(SPEEDS)}")
    tiny = [pair for pair in profile.pairs if pair.startswith("tiny-")]
    if tiny:
        raise KitError(
            f"the tiny pairs ({', '.join(tiny)}) train on this CPU, not a GPU: `./run_all.sh "
            f"--profile {profile.name} --dry-run` estimates them from finished runs; estimate a "
            "Hub profile here, e.g. --profile colab"
        )
    rows = []
    for pair in profile.pairs:
        for task in profile.train_tasks:
            rows.append(
                dict(
                    pair=pair,
                    task=task,
                    job="prepare",
                    hours=prepare_seconds(profile, pair, task, gpu) / 3600,
                )
            )
            for method in METHODS:
                seeds = run_seeds(profile, claimed(task, method))
                seconds = distill_seconds(profile, pair, task, method, gpu) * len(seeds)
                rows.append(dict(pair=pair, task=task, job=method, hours=seconds / 3600))
    return pd.DataFrame(rows).round(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_profile_options(parser, default="colab")
    parser.add_argument("--gpu", default="a100-80", help=f"one of: {', '.join(SPEEDS)}")
    args = parser.parse_args(argv)
    try:
        profile = get_profile(args.profile, **profile_overrides_from_args(args))
        hours = table(profile, args.gpu)
    except KitError as error:
        print(f"runtime: {error}", file=sys.stderr)
        return 2
    print(hours.to_string(index=False))
    print(f"Table 1 of {profile.name} on one {args.gpu}: about {hours['hours'].sum():.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
