"""transformers' attention implementations side by side on a prepared pair: PyTorch's SDPA kernels
against the plain ("eager") matmul-softmax-matmul, in what a cpu run pays for -- a teacher SFT step
(bf16 autocast, as preparation trains), a teacher scoring pass (bf16 weights), a student update and
one decode step and one draft-verify pass -- and the kit's short-query attention (SDPA, with
short bf16 queries on CPU as matmuls: `models.short_query_attention`). Prints seconds and the
ratios SDPA / eager and SDPA / short-query (> 1: the other is faster).

    python benchmarks/bench_attention.py --pair tiny-qwen --task synth_gsm
    python benchmarks/bench_attention.py --pair tiny-llama --task synth_summ --threads 1 --repeats 5
    python benchmarks/bench_attention.py --kernel    # the attention call alone, bf16, by query
    length

Real prompts and answers of the task at the profile's batch sizes; the implementations take turns
(the order reversed every other round) and the medians are printed. From these numbers
`prepare.sft_attention` trains with eager on CPU (the SFT step is where it pays) and `load_model`
gives bf16 models on CPU the short-query attention (decode steps and verify passes).
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
from adaswitch_lib.models import register_short_query_attention, short_query_attention  # noqa: E402
from adaswitch_lib.prepare import CACHE_ROOT, collate, load_prepared, pair_folder_if_ready  # noqa: E402
from adaswitch_lib.targets import ground_truth_targets  # noqa: E402

IMPLEMENTATIONS = ("sdpa", "eager", register_short_query_attention())


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


def kernel(threads: int, repeats: int = 200) -> None:
    """The attention call alone: SDPA against the short-query matmuls, bf16, batch 16, 4 query and
    2 key/value heads of 64 (the cpu teacher), ~120 keys of which one row in two has 10 of
    padding."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = type("Attention", (), dict(num_key_value_groups=2, is_causal=True, training=False))()
    print(f"\nattention call, bf16, {threads} thread(s), mean of {repeats}\n")
    print(
        "| query tokens | keys | SDPA | short-query | SDPA / short-query |\n|---|---|---|---|---|"
    )
    for q_len in (1, 2, 9, 17, 24, 32, 48):
        keys = 112 + q_len
        q, k, v = (
            torch.randn(16, h, n, 64).bfloat16() for h, n in ((4, q_len), (2, keys), (2, keys))
        )
        mask = torch.ones(16, 1, q_len, keys, dtype=torch.bool).tril(keys - q_len)
        mask[::2, ..., :10] = False
        times = {}
        for name, fn in (("sdpa", sdpa_attention_forward), ("short", short_query_attention)):
            for _ in range(10):
                fn(module, q, k, v, mask)
            start = time.perf_counter()
            for _ in range(repeats):
                fn(module, q, k, v, mask)
            times[name] = (time.perf_counter() - start) / repeats
        print(
            f"| {q_len} | {keys} | {times['sdpa'] * 1e6:.0f} us | {times['short'] * 1e6:.0f} us | "
            f"{times['sdpa'] / times['short']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--task", default="synth_gsm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a cpu run's jobs use 1 each)"
    )
    parser.add_argument(
        "--kernel", action="store_true", help="time the attention call alone (no prepared pair)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.kernel:
        return kernel(args.threads)
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
    print(
        "| work | SDPA | eager | short-query | SDPA / eager | SDPA / short-query "
        "|\n|---|---|---|---|---|---|"
    )
    for name in work:
        sdpa, eager, short = (statistics.median(seconds[(name, impl)]) for impl in IMPLEMENTATIONS)
        print(
            f"| {name} | {sdpa * 1000:.1f} ms | {eager * 1000:.1f} ms | {short * 1000:.1f} ms | "
            f"{sdpa / eager:.2f} | "
            f"{sdpa / short:.2f} |"
        )


if __name__ == "__main__":
    main()
