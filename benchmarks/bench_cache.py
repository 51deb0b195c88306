"""Decode-step time with transformers' DynamicCache (what the samplers use) against a StaticCache
(preallocated, the usual first step towards CUDA graphs), side by side in one run.

    python benchmarks/bench_cache.py                                   # the cpu profile's shapes,
    random init
    python benchmarks/bench_cache.py --device cuda --dtype bfloat16 \\
        --teacher 36,2048,16,2,11008 --student 24,896,14,2,4864 --vocab 151936  # Qwen2.5-3B / 0.5B
        shapes

Each model prefills a batch of prompts, then decodes one token at a time; medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_sampler import build  # noqa: E402  (the same shape-spec models, head scale 1)

from adaswitch_lib.decoding import cache_argument  # noqa: E402


def decode_seconds(
    model, kind: str, batch: int, prompt: int, steps: int, vocab: int, device
) -> float:
    """Seconds per decode step after a prefill of `prompt` tokens."""
    from transformers import DynamicCache, StaticCache

    ids = torch.randint(
        3, vocab, (batch, prompt + steps), generator=torch.Generator().manual_seed(0)
    ).to(device)
    mask = torch.ones_like(ids)
    static = kind == "static"
    cache = (
        StaticCache(config=model.config, max_cache_len=prompt + steps) if static else DynamicCache()
    )
    named = {cache_argument(model): cache}
    with torch.no_grad():
        extra = dict(cache_position=torch.arange(prompt, device=device)) if static else {}
        model(
            input_ids=ids[:, :prompt],
            attention_mask=mask[:, :prompt],
            use_cache=True,
            logits_to_keep=1,
            **named,
            **extra,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(prompt, prompt + steps):
            extra = dict(cache_position=torch.arange(i, i + 1, device=device)) if static else {}
            model(
                input_ids=ids[:, i : i + 1],
                attention_mask=mask[:, : i + 1],
                position_ids=torch.full((batch, 1), i, device=device),
                use_cache=True,
                logits_to_keep=1,
                **named,
                **extra,
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher", default="4,256,4,2,1024", help="layers,hidden,heads,kv_heads,intermediate"
    )
    parser.add_argument("--student", default="2,128,4,2,512")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=80)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(
        f"batch {args.batch}, prompt {args.prompt_tokens} + {args.steps} decode steps, "
        f"{args.dtype} on "
        f"{args.device}, {args.threads} thread(s); medians of {args.repeats} alternating repeats"
    )
    print("| model | DynamicCache ms/step | StaticCache ms/step | static / dynamic |")
    print("|---|---|---|---|")
    for name, spec, seed in (("teacher", args.teacher, 1), ("student", args.student, 2)):
        model = build(spec, args.vocab, 1.0, seed, dtype, device)
        times = {"dynamic": [], "static": []}
        for r in range(args.repeats):
            for kind in ("dynamic", "static") if r % 2 == 0 else ("static", "dynamic"):
                times[kind].append(
                    decode_seconds(
                        model, kind, args.batch, args.prompt_tokens, args.steps, args.vocab, device
                    )
                )
        dynamic, static = (statistics.median(times[k]) * 1000 for k in ("dynamic", "static"))
        print(f"| {name} {spec} | {dynamic:.2f} | {static:.2f} | {static / dynamic:.2f}× |")


if __name__ == "__main__":
    main()
