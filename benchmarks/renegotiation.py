"""Whether a model has learned the harder synth_summ twin's one new skill: on the test dialogues
that renegotiate a slot (`synth.summ_rejections` > 0), how often its greedy summary names the value
finally accepted, the one agreed before the renegotiation, another value turned down, the
accepted one with a turned-down one, or none of them. ROUGE-L hardly moves when one word of a
summary is wrong; this counts that word.

    python benchmarks/renegotiation.py --profile cpu-claims --set synth.summ_rejections=3 \
        --set dtype=float32 --pair tiny-qwen            # the prepared teacher and base student
    python benchmarks/renegotiation.py --profile cpu-claims --set synth.summ_rejections=3 \
        --outputs DIR/runs/RUN/outputs_synth_summ.jsonl  # what a distilled student wrote

Needs the prepared pair (`python -m adaswitch_lib prepare ... --task synth_summ`) or a run's
outputs file; both must come from the same twin as the `--set` given here.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaswitch_lib.config import get_profile, parse_overrides  # noqa: E402
from adaswitch_lib.data import load_profile_task, prompt_style, token_limits  # noqa: E402
from adaswitch_lib.evaluate import generate  # noqa: E402
from adaswitch_lib.prepare import CACHE_ROOT, load_prepared, pair_folder_if_ready  # noqa: E402
from adaswitch_lib.synth import renegotiation_outcome  # noqa: E402

OUTCOMES = ("accepted", "first_agreed", "turned_down", "both", "neither")


def tally(examples: list[dict], responses: dict[str, str]) -> dict:
    """Outcome -> count over the renegotiated examples that have a response (by example id)."""
    counts = collections.Counter(
        renegotiation_outcome(example, responses[example["id"]])
        for example in examples
        if example.get("renegotiation") and example["id"] in responses
    )
    return {outcome: counts[outcome] for outcome in OUTCOMES}


def line(name: str, counts: dict) -> str:
    total = sum(counts.values())
    shares = ", ".join(f"{k} {v} ({100 * v / max(total, 1):.0f} %)" for k, v in counts.items())
    return f"{name}: {total} renegotiated dialogues: {shares}"


def model_responses(profile, folder: Path, examples: list[dict]) -> dict[str, dict[str, str]]:
    """Which model -> example id -> greedy response, for the prepared teacher and base student."""
    teacher, student, tokenizer = load_prepared(folder, profile.dtype, "cpu", "float32")
    max_prompt, max_new = token_limits(profile, "synth_summ")
    style = prompt_style(profile)
    out = {}
    for name, model in (("teacher", teacher), ("base student", student)):
        texts = generate(
            model, tokenizer, examples, max_new, max_prompt, profile.eval_batch_size, style
        )
        out[name] = {example["id"]: text for example, text in zip(examples, texts)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-claims")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--pair", default="tiny-qwen")
    parser.add_argument("--outputs", nargs="*", default=[], help="runs' outputs_synth_summ.jsonl")
    parser.add_argument("--limit", type=int, default=0, help="the first N test dialogues (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile, **parse_overrides(args.set))
    if not profile.synth.summ_rejections:
        raise SystemExit("this twin renegotiates nothing: add --set synth.summ_rejections=N (1-3)")
    examples = load_profile_task(profile, "synth_summ", "test")[: args.limit or None]
    if args.outputs:
        for path in args.outputs:
            rows = [json.loads(text) for text in Path(path).read_text().splitlines() if text]
            print(line(path, tally(examples, {row["id"]: row["response"] for row in rows})))
        return
    folder = pair_folder_if_ready(profile, args.pair, "synth_summ", Path(CACHE_ROOT))
    if folder is None:
        raise SystemExit(
            f"no prepared {args.pair} on synth_summ for this profile and --set: run `python -m "
            f"adaswitch_lib prepare --profile {args.profile} --pair {args.pair} --task synth_summ "
            "--set ...` with the same --set first"
        )
    for name, responses in model_responses(profile, folder, examples).items():
        print(line(f"{folder.name} {name}", tally(examples, responses)))


if __name__ == "__main__":
    main()
