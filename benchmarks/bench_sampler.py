"""Sampler cost, side by side in one run: on-policy, AdaSwitch (exact and speculative teacher
continuation), SKD, their token-by-token references and HF `generate`, in three regimes (no row
switches, rows switch late, most switch early) -- or on a trained pair with its real statistics.

    python benchmarks/bench_sampler.py --trained cpu:tiny-qwen:synth_gsm   # a prepared pair, real
    prompts
    python benchmarks/bench_sampler.py                                  # tiny cpu-profile shapes,
    CPU
    python benchmarks/bench_sampler.py --device cuda --dtype bfloat16 \\
        --teacher-shape 36,2048,16,2,11008 --student-shape 24,896,14,2,4864 --vocab 151936   #
        Qwen2.5-3B/0.5B shapes
    python benchmarks/bench_sampler.py --teacher path/or/hub-id --student path/or/hub-id

Random-init models have nearly flat divergences; their output heads are scaled up (--head-scale)
so that d_i varies along a sequence, and each regime is set by K and L (its switch statistics are
printed). Every method is timed after an untimed warm-up, in alternating order (A B ... B A),
and reported as the median; ratios are of medians from this one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from adaswitch_lib.data import left_pad
from adaswitch_lib.sampler import SamplerConfig, sample_targets

REGIMES = {
    "no switch": (math.inf, 10),
    "late switch": (1.5, 10),
    "early switch": (1.1, 2),
}  # (K, L)


def build(spec: str, vocab: int, head_scale: float, seed: int, dtype, device):
    if "," not in spec:  # a folder or Hub id
        return AutoModelForCausalLM.from_pretrained(spec, dtype=dtype).to(device).eval()
    layers, hidden, heads, kv, inter = (int(x) for x in spec.split(","))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).to(dtype=dtype, device=device).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    return model


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def trained(spec: str, repeats: int, batches: int, threads: int):
    """The prepared pair of `profile:pair:task` on its test prompts, with the profile's sampler
    settings."""
    from pathlib import Path

    from adaswitch_lib.config import RunConfig, get_profile
    from adaswitch_lib.data import load_profile_task, token_limits, tokenize_prompts
    from adaswitch_lib.prepare import CACHE_ROOT, load_prepared, pair_folder_if_ready
    from adaswitch_lib.targets import sampler_config

    profile_name, pair, task = spec.split(":")
    profile = get_profile(profile_name)
    folder = pair_folder_if_ready(profile, pair, task, Path(CACHE_ROOT))
    if folder is None:
        raise SystemExit(
            f"no prepared {pair} on {task} for profile {profile_name}: run "
            f"`python -m adaswitch_lib prepare --profile {profile_name} --pair {pair} --task "
            f"{task}` first"
        )
    # as a run has them
    teacher, student, tokenizer = load_prepared(folder, profile.dtype, student_dtype="float32")
    max_prompt, max_new = token_limits(profile, task)
    examples = load_profile_task(profile, task, "test")[: batches * profile.kd_batch_size]
    prompts = tokenize_prompts(tokenizer, examples, max_prompt)
    size = profile.kd_batch_size
    batches = [
        left_pad(prompts[i : i + size], tokenizer.pad_token_id)
        for i in range(0, len(prompts), size)
    ]
    base = sampler_config(
        RunConfig(profile, pair=pair, task=task), tokenizer, max_new, keep_teacher_logits=True
    )

    def score(targets):
        positions = (targets.attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            teacher(
                input_ids=targets.sequences,
                attention_mask=targets.attention_mask,
                position_ids=positions,
            )

    def over_batches(method, cfg, with_score=False):
        stats = []
        for b, (ids, mask) in enumerate(batches):
            t = sample_targets(
                method, student, teacher, ids, mask, cfg, torch.Generator().manual_seed(b)
            )
            if with_score:
                score(t)
            stats.append(t.stats)
        return stats

    variants = {
        "on-policy (student + score)": ("student", base, True),
        "adaswitch, exact continuation": (
            "adaswitch",
            dataclasses.replace(base, teacher_continuation="exact"),
            False,
        ),
        "adaswitch, speculative (q: teacher warp)": (
            "adaswitch",
            dataclasses.replace(base, teacher_continuation="speculative"),
            False,
        ),
        "adaswitch, speculative (q: student warp)": (
            "adaswitch",
            dataclasses.replace(
                base, teacher_continuation="speculative", continuation_draft="student_warp"
            ),
            False,
        ),
        "adaswitch reference": ("adaswitch_reference", base, False),
        "skd, draft -> verify": ("skd", base, False),
        "skd reference": ("skd_reference", base, False),
    }
    for name, (method, cfg, with_score) in variants.items():  # warm-up
        over_batches(method, cfg, with_score)
    times = {name: [] for name in variants}
    order = list(variants)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            method, cfg, with_score = variants[name]
            start = time.perf_counter()
            stats = over_batches(method, cfg, with_score)
            times[name].append(time.perf_counter() - start)
            if r == 0 and method.startswith("adaswitch"):
                cat = lambda key: torch.cat([s[key] for s in stats]).float()
                line = f"switched {cat('switched').mean():.0%}"
                if "continuation_drafted" in stats[0]:
                    drafted = cat("continuation_drafted").sum().clamp(min=1)
                    acceptance = cat("continuation_accepted").sum() / drafted
                    line += f", continuation acceptance {acceptance:.2f}"
                print(f"   {name}: {line}")
    median = {name: statistics.median(t) for name, t in times.items()}
    on = median["on-policy (student + score)"]
    print(
        f"\n{spec}: {len(batches)} batches of {size} test prompts, up to {max_new} new tokens, "
        f"{threads} threads, median of {repeats}\n"
    )
    print("| sampler | seconds | / on-policy |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.2f} | {value / on:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher",
        "--teacher-shape",
        dest="teacher",
        default="4,256,4,2,1024",
        help="layers,hidden,heads,kv_heads,intermediate or a model folder / Hub id",
    )
    parser.add_argument("--student", "--student-shape", dest="student", default="2,128,4,2,512")
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--draft-chunk", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--head-scale", type=float, default=8.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--trained", help="profile:pair:task of a prepared pair, e.g. cpu:tiny-qwen:synth_gsm"
    )
    parser.add_argument(
        "--batches", type=int, default=4, help="with --trained: batches of test prompts"
    )
    parser.add_argument(
        "--regimes",
        default=",".join(REGIMES),
        help="comma list of the random-init regimes to time "
        f"(default: all of {', '.join(REGIMES)})",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.trained:
        return trained(args.trained, args.repeats, args.batches, args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    teacher = build(args.teacher, args.vocab, args.head_scale, 2, dtype, device)
    student = build(args.student, args.vocab, args.head_scale, 1, dtype, device)
    vocab = min(teacher.config.vocab_size, student.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(
        args.prompt_tokens * 2 // 3, args.prompt_tokens + 1, (args.batch,), generator=g
    )
    ids, mask = left_pad(
        [torch.randint(4, vocab, (int(n),), generator=g).tolist() for n in lengths], device=device
    )
    # no EOS: every row runs the full length, so the regimes differ only in where rows switch
    base = SamplerConfig(
        max_new_tokens=args.new_tokens,
        eos_token_id=None,
        draft_chunk=args.draft_chunk,
        student_temperature=1.0,
        student_top_p=1.0,
        vocab_size=vocab,
    )

    def score(targets):  # the teacher pass a KD step needs for its loss
        positions = (targets.attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            teacher(
                input_ids=targets.sequences,
                attention_mask=targets.attention_mask,
                position_ids=positions,
            )

    def timed(fn):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        return time.perf_counter() - start, result

    print(
        f"device {args.device} ({args.dtype}), teacher {args.teacher}, student {args.student}, "
        f"vocab {vocab}, "
        f"batch {args.batch} x {args.new_tokens} new tokens, draft chunk {args.draft_chunk}, "
        f"{args.repeats} repeats\n"
    )
    rows = []
    chosen = args.regimes.split(",")
    if not set(chosen) <= set(REGIMES):
        raise SystemExit(f"--regimes {args.regimes!r}: choose from {', '.join(REGIMES)}")
    for regime, (k, window) in ((r, REGIMES[r]) for r in chosen):
        cfg = SamplerConfig(**{**base.__dict__, "adaswitch_k": k, "adaswitch_window": window})
        keep = SamplerConfig(**{**cfg.__dict__, "keep_teacher_logits": True})
        seed = lambda: torch.Generator().manual_seed(1)
        methods = {
            "on-policy (student + score)": lambda: score(
                sample_targets("student", student, teacher, ids, mask, cfg, seed())
            ),
            "adaswitch fast (+ score)": lambda: score(
                sample_targets("adaswitch", student, teacher, ids, mask, cfg, seed())
            ),
            "adaswitch fast, logits reused": lambda: sample_targets(
                "adaswitch", student, teacher, ids, mask, keep, seed()
            ),
            "adaswitch fast (sampling)": lambda: sample_targets(
                "adaswitch", student, teacher, ids, mask, cfg, seed()
            ),
            "adaswitch reference (sampling)": lambda: sample_targets(
                "adaswitch_reference", student, teacher, ids, mask, cfg, seed()
            ),
            "skd (+ score)": lambda: score(
                sample_targets("skd", student, teacher, ids, mask, cfg, seed())
            ),
            "student, ours": lambda: sample_targets(
                "student", student, teacher, ids, mask, cfg, seed()
            ),
            "student, HF generate": lambda: student.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
                eos_token_id=None,
            ),
        }
        times = {name: [] for name in methods}
        for fn in methods.values():  # warm-up, untimed
            fn()
        order = list(methods)
        for r in range(args.repeats):
            for name in order if r % 2 == 0 else order[::-1]:
                times[name].append(timed(methods[name])[0])
        stats = sample_targets("adaswitch", student, teacher, ids, mask, cfg, seed()).stats
        median = {name: statistics.median(t) for name, t in times.items()}
        switched = stats["switched"].float().mean().item()
        position = (
            stats["switch_index"][stats["switched"]].float().median().item()
            if switched
            else float("nan")
        )
        rows.append((regime, k, window, switched, position, median))
        print(
            f"## {regime}: K={k}, L={window}; switched rows {switched:.0%}, median switch index "
            f"{position:.0f}"
        )
        for name, value in median.items():
            print(f"   {name:<32} {value * 1000:8.1f} ms")
        print()

    print(
        "| regime | K, L | switched | median switch i | AdaSwitch / on-policy | AdaSwitch reused / "
        "on-policy "
        "| reference / fast | SKD / on-policy | ours / HF generate tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for regime, k, window, switched, position, m in rows:
        print(
            f"| {regime} | {k}, {window} | {switched:.0%} | {position:.0f} "
            f"| {m['adaswitch fast (+ score)'] / m['on-policy (student + score)']:.2f}x "
            f"| {m['adaswitch fast, logits reused'] / m['on-policy (student + score)']:.2f}x "
            f"| {m['adaswitch reference (sampling)'] / m['adaswitch fast (sampling)']:.2f}x "
            f"| {m['skd (+ score)'] / m['on-policy (student + score)']:.2f}x "
            f"| {m['student, HF generate'] / m['student, ours']:.2f}x |"
        )


if __name__ == "__main__":
    main()
