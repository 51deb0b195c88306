"""How many tokens a teacher pass would write if a switched AdaSwitch row drafted by prompt lookup
(the longest recent n-gram's earlier continuation in prompt + response, a draft that costs no model
call) instead of by the student. Counted on the reference responses, which the trained cpu teachers
write almost word for word at their near-greedy sampling (temperature 0.2, top-p 0.5): a pass keeps
the drafts up to the first one that differs and writes one teacher token there. 1.00 means lookup
saves nothing over one teacher step a token.

    python benchmarks/bench_prompt_lookup.py --profile cpu-claims --tasks synth_gsm
    python benchmarks/bench_prompt_lookup.py --profile cpu-claims --tasks synth_summ \
        --set synth.summ_rejections=3 --set dtype=float32

Needs the prepared pairs' tokenizers (`python -m adaswitch_lib prepare --task T`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib import models  # noqa: E402
from adaswitch_lib.config import get_profile, parse_overrides  # noqa: E402
from adaswitch_lib.data import format_completion, format_prompt, load_profile_task  # noqa: E402
from adaswitch_lib.prepare import CACHE_ROOT, pair_folder_if_ready  # noqa: E402


def lookup_draft(context: list[int], longest_ngram: int, length: int) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the context's last n tokens, for
    the largest n <= longest_ngram that occurs; [] when none does."""
    for n in range(min(longest_ngram, len(context) - 1), 0, -1):
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start : start + n] == tail:
                return context[start + n : start + n + length]
    return []


def passes_to_write(prompt: list[int], response: list[int], longest_ngram: int, length: int) -> int:
    """Teacher passes that write `response` when each pass verifies a lookup draft."""
    written, passes = 0, 0
    while written < len(response):
        draft = lookup_draft(prompt + response[:written], longest_ngram, length)
        kept = 0
        while kept < len(draft) and written + kept < len(response):
            if draft[kept] != response[written + kept]:
                break
            kept += 1
        written, passes = written + kept + 1, passes + 1
    return passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-claims")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--tasks", default="", help="comma-separated (default: the profile's)")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--lengths", default="3,5,8", help="draft lengths to count")
    parser.add_argument("--longest-ngram", type=int, default=3)
    args = parser.parse_args()
    profile = get_profile(args.profile, **parse_overrides(args.set))
    for task in args.tasks.split(",") if args.tasks else profile.train_tasks:
        folder = pair_folder_if_ready(profile, args.pair, task, Path(CACHE_ROOT))
        if folder is None:
            raise SystemExit(
                f"no prepared {args.pair} on {task}: run `python -m adaswitch_lib prepare "
                f"--profile {args.profile} --pair {args.pair} --task {task}` first"
            )
        tokenizer = models.load_tokenizer(str(folder / "tokenizer"))
        pairs = [
            tuple(
                tokenizer(text, add_special_tokens=False)["input_ids"]
                for text in (format_prompt(example), format_completion(example))
            )
            for example in load_profile_task(profile, task, "test")[: args.examples]
        ]
        tokens = sum(len(response) for _, response in pairs)
        for length in map(int, args.lengths.split(",")):
            passes = sum(
                passes_to_write(prompt, response, args.longest_ngram, length)
                for prompt, response in pairs
            )
            print(
                f"{task}: draft length {length}, n-grams up to {args.longest_ngram}: "
                f"{tokens / passes:.2f} tokens a teacher pass ({len(pairs)} responses, "
                f"{tokens / len(pairs):.1f} tokens each)"
            )


if __name__ == "__main__":
    main()
