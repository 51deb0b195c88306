"""AdaSwitch on one prompt, token by token: the walkthrough notebook's engine (the paper's
Figure 2, live).

    python -m adaswitch_lib.walkthrough --profile smoke --K 3 --L 10

`trace()` samples one AdaSwitch target and recomputes d_i = D(teacher || student) at every
response position with one forward pass of each model over the finished sequence (the same
prefixes the sampler saw, so the same d_i up to float rounding), then the moving threshold
K * mean(d_{i-L} .. d_{i-1}); `plot_trace()` draws them, `coloured_html()` shows who wrote what.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import torch

from adaswitch_lib import models
from adaswitch_lib.config import (
    Profile,
    RunConfig,
    add_profile_options,
    as_profile,
    get_profile,
    profile_overrides_from_args,
)
from adaswitch_lib.data import (
    left_pad,
    load_profile_task,
    prompt_style,
    token_limits,
    tokenize_prompts,
)
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import position_divergence
from adaswitch_lib.models import stop_token_ids
from adaswitch_lib.prepare import CACHE_ROOT, load_prepared, pair_folder_if_ready, prepare_pair
from adaswitch_lib.sampler import sample_targets, shared_vocab_size
from adaswitch_lib.targets import sampler_config

# light blue / light orange (colour-blind safe pair)
STUDENT_COLOUR, TEACHER_COLOUR = "#cfe2f3", "#f9cb9c"


def load_pair(
    profile: str | Profile,
    pair: str,
    task: str,
    cache_dir=CACHE_ROOT,
    off_the_shelf: bool = False,
):
    """(teacher, student, tokenizer, test examples) of a prepared pair; prepares it first when
    missing, saying so (a few minutes on the cpu profile, seconds on smoke). `profile`: a Profile
    or a profile's name. `off_the_shelf`: a Hub pair's checkpoints as they are, without any
    fine-tuning (no preparation: AdaSwitch on the published Qwen2.5 pair in minutes)."""
    profile = as_profile(profile)
    if off_the_shelf:
        return _off_the_shelf(profile, pair, task)
    if pair_folder_if_ready(profile, pair, task, Path(cache_dir)) is None:
        print(
            f"preparing {pair} on {task} for the {profile.name} profile first "
            f"({'seconds' if profile.name == 'smoke' else 'about 3-5 minutes on 2 cores'}) ...",
            flush=True,
        )
    start = time.perf_counter()
    folder = prepare_pair(profile, pair, task, Path(cache_dir))
    teacher, student, tokenizer = load_prepared(folder, profile.dtype, student_dtype="float32")
    print(f"pair ready in {time.perf_counter() - start:.0f} s: {folder}", flush=True)
    return teacher, student, tokenizer, load_profile_task(profile, task, "test")


def _off_the_shelf(profile: Profile, pair: str, task: str):
    if pair.startswith("tiny-"):
        raise ConfigError(
            f"off_the_shelf takes a Hub pair (qwen, llama, qwen-small); {pair} exists only once "
            "prepared"
        )
    teacher, student = models.pair_checkpoints(profile, pair)
    tokenizer = models.load_tokenizer(student.name_or_path, student.revision)
    return (
        models.load_model(teacher.name_or_path, profile.dtype, revision=teacher.revision),
        models.load_model(student.name_or_path, "float32", revision=student.revision),
        tokenizer,
        load_profile_task(profile, task, "test"),
    )


def _one_target(
    profile, run: RunConfig, method: str, teacher, student, tokenizer, example, seed: int
):
    """(prompt ids, mask, the sampled Targets) for one prompt under `method`'s sampler."""
    max_prompt, max_new = token_limits(profile, run.task)
    prompts = tokenize_prompts(tokenizer, [example], max_prompt, prompt_style(profile))
    ids, mask = left_pad(prompts, tokenizer.pad_token_id, next(student.parameters()).device)
    sampler = {"adaswitch": "adaswitch", "skd": "skd"}.get(method, "student")
    cfg = sampler_config(
        run, tokenizer, max_new, eos_token_id=stop_token_ids(tokenizer, student, teacher)
    )
    generator = torch.Generator().manual_seed(seed)
    return ids, mask, sample_targets(sampler, student, teacher, ids, mask, cfg, generator)


@torch.no_grad()
def _divergences(targets, teacher, student, vocab: int, divergence: str) -> list[float]:
    """d_i at every response position of the first row, from one forward pass of each model over
    the finished sequence (the prefixes the sampler saw)."""
    n, p = int(targets.response_mask[0].sum()), targets.prompt_length
    logits = [
        m(input_ids=targets.sequences, attention_mask=targets.attention_mask)
        .logits[0, :, :vocab]
        .float()
        for m in (student, teacher)
    ]
    response = [x[None, p - 1 : p - 1 + n] for x in logits]
    return position_divergence(*response, divergence)[0].tolist()


def trace(
    profile: str | Profile,
    pair: str,
    task: str,
    teacher,
    student,
    tokenizer,
    example,
    K: float = 3.0,
    L: int = 10,
    seed: int = 0,
    method: str = "adaswitch",
) -> dict:
    """One target for one prompt: tokens, who wrote each, d_i at every position, the threshold, the
    switch position (None when the student kept the pen)."""
    profile = as_profile(profile)
    run = RunConfig(
        profile,
        pair=pair,
        task=task,
        seed=seed,
        adaswitch_k=float(K),
        adaswitch_window=int(L),
        method=method if method in ("skd", "adaswitch") else "on_policy",
    )
    ids, mask, targets = _one_target(
        profile, run, method, teacher, student, tokenizer, example, seed
    )
    vocab = shared_vocab_size(student, teacher, len(tokenizer))
    d = _divergences(targets, teacher, student, vocab, run.divergence)
    n, p, stats = len(d), targets.prompt_length, targets.stats
    switch = int(stats["switch_index"][0]) - 1 if "switch_index" in stats else -1
    tokens = targets.sequences[0, p : p + n].tolist()
    return dict(
        method=method,
        tokens=tokens,
        pieces=[tokenizer.decode([t]) for t in tokens],
        who=["teacher" if 0 <= switch <= i else "student" for i in range(n)],
        d=d,
        # the moving threshold K * mean of the previous L divergences (from token L + 1 on)
        threshold=[K * sum(d[i - L : i]) / L if i >= L else float("nan") for i in range(n)],
        switch=switch if switch >= 0 else None,
        K=K,
        L=L,
        prompt=tokenizer.decode(ids[0][mask[0].bool()], skip_special_tokens=True),
        text=tokenizer.decode(tokens, skip_special_tokens=True),
        replaced=int(stats["replaced_tokens"][0]) if "replaced_tokens" in stats else None,
        sampler_d_at_switch=float(stats["d_at_switch"][0]) if switch >= 0 else None,
    )


def plot_trace(t: dict, ax=None):
    """d_i per response token, the moving threshold K * mean of the previous L, the switch point."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.8))
    positions = range(1, len(t["d"]) + 1)
    ax.plot(positions, t["d"], marker=".", label="$d_i$ = D(teacher ‖ student)")
    ax.plot(
        positions,
        t["threshold"],
        linestyle="--",
        label=f"K · mean of previous L (K={t['K']:g}, L={t['L']})",
    )
    if t["switch"] is not None:
        ax.axvline(t["switch"] + 1, color="black", linewidth=1)
        ax.axvspan(
            t["switch"] + 0.5,
            len(t["d"]) + 0.5,
            color=TEACHER_COLOUR,
            alpha=0.4,
            label="teacher writes",
        )
    ax.set(
        xlabel="response token i",
        ylabel="divergence",
        title="switch at token %s" % (t["switch"] + 1)
        if t["switch"] is not None
        else "no switch: the student wrote it all",
    )
    ax.legend(fontsize="small", loc="upper left")
    return ax


def coloured_html(t: dict) -> str:
    """The response with each token shaded by who wrote it (blue: student, orange: teacher)."""
    spans = "".join(
        f'<span style="background:{STUDENT_COLOUR if w == "student" else TEACHER_COLOUR}">'
        f"{html.escape(piece)}</span>"
        for piece, w in zip(t["pieces"], t["who"])
    )
    return f'<div style="font-family:monospace;white-space:pre-wrap;line-height:1.6">{spans}</div>'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="AdaSwitch on one prompt, token by token.")
    add_profile_options(parser, default="smoke")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--task", default="synth_gsm")
    parser.add_argument("--K", type=float, default=3.0)
    parser.add_argument("--L", type=int, default=10)
    parser.add_argument("--example", type=int, default=0)
    parser.add_argument(
        "--off-the-shelf", action="store_true", help="a Hub pair's checkpoints, no fine-tuning"
    )
    args = parser.parse_args(argv)
    profile = get_profile(args.profile, **profile_overrides_from_args(args))
    teacher, student, tokenizer, examples = load_pair(
        profile, args.pair, args.task, off_the_shelf=args.off_the_shelf
    )
    t = trace(
        profile,
        args.pair,
        args.task,
        teacher,
        student,
        tokenizer,
        examples[args.example],
        args.K,
        args.L,
    )
    print(t["prompt"], "\n---")
    print("".join(p if w == "student" else f"[{p}]" for p, w in zip(t["pieces"], t["who"])))
    print(
        "switch at token",
        None if t["switch"] is None else t["switch"] + 1,
        "of",
        len(t["tokens"]),
        "(teacher tokens in brackets)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
