"""What each phase of a Hub profile's run spends, in seconds and peak memory, beside the memory
estimator's figure: random-init models at the pair's published shapes (no weights, no network),
every row at the profile's full prompt and response lengths (random weights write no EOS), the
estimator's worst case.

    python benchmarks/bench_phases.py --device cuda --profile colab --pair qwen-small --task gsm8k
    python benchmarks/bench_phases.py --tiny     # CPU, small shapes and lengths: the same code path
    python benchmarks/bench_phases.py --device cuda --set kd_optimizer=adamw_8bit   # the T4 route

Phases: the teacher's SFT (`--steps` steps by the profile's route, LoRA or full, with its
validation NLL), greedy evaluation (`generate`, eval_batch_size rows), `--steps` KD steps of each
method (sampling, teacher scoring, student update), and the KD validation divergence. Peak memory is
`torch.cuda.max_memory_allocated` per phase on a GPU (on a CPU it is not measured: "-").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_step import _Tokenizer  # noqa: E402

from adaswitch_lib import memory, models  # noqa: E402
from adaswitch_lib.config import METHODS, RunConfig, get_profile, parse_overrides  # noqa: E402
from adaswitch_lib.data import token_limits  # noqa: E402
from adaswitch_lib.distill import distill  # noqa: E402
from adaswitch_lib.evaluate import greedy_config, validation_divergence  # noqa: E402
from adaswitch_lib.prepare import sft_attention, supervised_finetune  # noqa: E402

TINY = dict(
    max_prompt_tokens_gsm=24,
    max_new_tokens_gsm=12,
    teacher_batch_size=4,
    kd_batch_size=4,
    eval_batch_size=4,
)
TINY_SHAPE = models.Shape(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=4096)


class Phases:
    """Times each phase and, on a GPU, its peak allocated memory."""

    def __init__(self, device: torch.device):
        self.device, self.rows = device, []

    def run(self, name: str, work, estimate: float):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = work()
        if cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / memory.GIB if cuda else None
        self.rows.append((name, time.perf_counter() - start, peak, estimate / memory.GIB))
        return out

    def table(self) -> str:
        lines = [
            "| phase | seconds | peak GiB | estimate GiB | estimate / peak |",
            "|---|---|---|---|---|",
        ]
        for name, seconds, peak, estimate in self.rows:
            measured = "-" if peak is None else f"{peak:.2f}"
            ratio = "-" if not peak else f"{estimate / peak:.2f}"
            lines.append(f"| {name} | {seconds:.1f} | {measured} | {estimate:.2f} | {ratio} |")
        return "\n".join(lines)


def random_pairs(vocab: int, rows: int, prompt: int, new: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(3, vocab, (prompt,), generator=g).tolist(),
            torch.randint(3, vocab, (new,), generator=g).tolist(),
        )
        for _ in range(rows)
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="colab")
    parser.add_argument("--pair", default="qwen-small")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=2, help="SFT and KD steps per phase")
    parser.add_argument("--tiny", action="store_true", help="small shapes and lengths (CPU)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a profile field, e.g. --set kd_optimizer=adamw_8bit (the T4 route)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    overrides = {**(TINY if args.tiny else {}), **parse_overrides(args.set)}
    base = get_profile(args.profile, **overrides)
    shapes = [TINY_SHAPE] * 2 if args.tiny else list(models.pair_shapes(base, args.pair))
    family = "llama" if args.pair == "llama" else "qwen"
    teacher, student = (
        models.random_model(s, family, seed, max_position_embeddings=4096)
        for s, seed in zip(shapes, (1, 2))
    )
    with tempfile.TemporaryDirectory() as folder:  # the estimator reads the shapes from here
        for name, model in (("teacher", teacher), ("student", student)):
            model.config.save_pretrained(Path(folder) / name)
        profile = get_profile(
            args.profile,
            **overrides,
            **({} if len(base.pairs) == 1 else {"pairs": (args.pair,), "figure_pairs": ()}),
            teacher_model=str(Path(folder) / "teacher"),
            student_model=str(Path(folder) / "student"),
        )
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        gpu = memory.GPU(str(device), 0.0, bf16)
        estimates = memory.phases(profile, args.pair, args.task, gpu)
    prompt, new = token_limits(profile, args.task)
    vocab = shapes[0].vocab
    billions = [f"{s.parameters / 1e9:.2f} B" for s in shapes]
    print(
        f"{args.profile} {args.pair} {args.task} on {device}: teacher {billions[0]}, student "
        f"{billions[1]} parameters, rows of {prompt} + {new} tokens"
    )
    phases = Phases(device)
    teacher = teacher.to(device)
    train_pairs = random_pairs(vocab, 4 * profile.teacher_batch_size, prompt, new, 0)
    val_pairs = random_pairs(vocab, 4, prompt, new, 1)
    autocast = models.training_autocast(device, profile.train_bf16)

    def teacher_sft():
        lora = profile.teacher_sft == "lora"
        trainee = (
            models.lora_adapters(teacher, profile.lora_rank, profile.dropout) if lora else teacher
        )
        supervised_finetune(
            trainee,
            train_pairs,
            val_pairs,
            2,
            profile.teacher_lr,
            profile.teacher_batch_size,
            0,
            eval_every=args.steps,
            log_every=10**6,
            autocast=autocast,
            attention=sft_attention(device),
            length_groups=profile.length_groups,
            checkpointing=profile.gradient_checkpointing,
        )
        if lora:
            trainee.merge_and_unload()

    phases.run(f"teacher SFT ({args.steps} steps)", teacher_sft, estimates["teacher SFT"])
    student.to(device)
    prompts = torch.randint(3, vocab, (profile.eval_batch_size, prompt), device=device)
    config = greedy_config(_Tokenizer(vocab), new)
    config.min_new_tokens = new  # every row at full length

    @torch.no_grad()
    def evaluation():
        teacher.generate(prompts, attention_mask=torch.ones_like(prompts), generation_config=config)

    phases.run("pair evaluation (greedy)", evaluation, estimates["pair evaluation (greedy)"])
    teacher = teacher.to(torch.bfloat16 if bf16 else torch.float32).eval().requires_grad_(False)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    kd_pairs = random_pairs(vocab, 4 * profile.kd_batch_size, prompt, new, 2)
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    kd_peak = max(estimates["KD sampling"], estimates["KD student update"])
    quiet = dataclasses.replace(profile, eval_every_early=10**6, eval_every=10**6, log_every=10**6)
    for method in args.methods.split(","):
        student.load_state_dict(state)
        run = RunConfig(quiet, pair=args.pair, task=args.task, method=method)
        phases.run(
            f"KD {method} ({args.steps} steps)",
            lambda: distill(
                run,
                teacher,
                student,
                _Tokenizer(vocab),
                kd_pairs,
                max_new_tokens=new,
                steps=args.steps,
                teacher_pairs=kd_pairs,
            ),
            kd_peak,
        )
    run = RunConfig(quiet, pair=args.pair, task=args.task)
    phases.run(
        "KD validation",
        lambda: validation_divergence(
            run, student, teacher, val_pairs, 0, vocab, profile.eval_batch_size
        ),
        estimates["KD validation"],
    )
    print(phases.table())


if __name__ == "__main__":
    main()
