"""Tasks: load a split as examples, format prompts, score predictions.

Every task yields examples with the same keys: `id`, `task`, `source` (question or dialogue),
`target` (the training response), and `answer` (GSM tasks; None when a GSM-Plus question has no
answer) or `references` (summarisation; ROUGE-L takes the best). Real tasks come from the Hugging
Face Hub or from a local jsonl/json/parquet file with the Hub's columns; offline twins are
generated.

    python -m adaswitch_lib.data gsm8k test --path ../shared/data/gsm8k/test.jsonl
    python -m adaswitch_lib.data synth_summ validation
    python -m adaswitch_lib.data synth_summ test --set synth.summ_rejections=3   # a harder twin
"""

from __future__ import annotations

import argparse
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from adaswitch_lib import metrics, synth
from adaswitch_lib.config import TASKS, Profile, SynthConfig, _check_name, parse_overrides
from adaswitch_lib.errors import ConfigError, DataUnavailableError, hub_unreachable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskInfo:
    kind: str  # "gsm" (accuracy) or "summ" (ROUGE-L)
    splits: tuple  # splits a user may ask for; "kd" is the KD subset of train
    hub_id: str | None = None
    hub_config: str | None = None
    twin: str | None = None  # the offline twin of a Hub task


TASK_INFO = {
    "gsm8k": TaskInfo(
        "gsm", ("train", "validation", "kd", "test"), "openai/gsm8k", "main", "synth_gsm"
    ),
    "gsm_plus": TaskInfo("gsm", ("test",), "qintongli/GSM-Plus", None, "synth_gsm_plus"),
    "dialogsum": TaskInfo(
        "summ", ("train", "validation", "kd", "test"), "knkarthick/dialogsum", None, "synth_summ"
    ),
    "synth_gsm": TaskInfo("gsm", ("train", "validation", "kd", "test")),
    "synth_gsm_plus": TaskInfo("gsm", ("test",)),
    "synth_summ": TaskInfo("summ", ("train", "validation", "kd", "test")),
}
# carved from GSM8K train with a fixed seed, following SKD (7,000 train remain)
GSM8K_VALIDATION = 473
ROBUSTNESS_TWIN = {
    "gsm8k": "gsm_plus",
    "synth_gsm": "synth_gsm_plus",
}  # GSM students are also scored here
SPLIT_SEED = 1234  # fixed: the split must not change with the run's seed
# Local copies of the Hub tasks under a profile's `data_dir`: per (task, split), the file stems
# tried in order (the Hub's split names, then the names of the tasks' own releases), each as
# .jsonl, .json or .parquet. GSM8K's validation and KD splits are carved from its train file, and
# every KD split from train.
LOCAL_FILES = {
    ("gsm8k", "train"): ("gsm8k/train",),
    ("gsm8k", "test"): ("gsm8k/test",),
    ("dialogsum", "train"): ("dialogsum/train", "dialogsum/dialogsum.train"),
    ("dialogsum", "validation"): ("dialogsum/validation", "dialogsum/dialogsum.dev"),
    ("dialogsum", "test"): ("dialogsum/test", "dialogsum/dialogsum.test"),
    ("gsm_plus", "test"): (
        "gsm_plus/test",
        "gsm-plus/gsmplus_test",
        "gsm-plus/gsmplus_testmini",  # GSM-Plus's 2,400-question subset
    ),
}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def task_kind(task: str) -> str:
    _check_name("task", task, TASKS)
    return TASK_INFO[task].kind


def load_task(
    task: str,
    split: str,
    *,
    path: str | Path | None = None,
    synth_config: SynthConfig | None = None,
    n_kd: int = 1000,
    kd_seed: int = 0,
    critical_thinking: str = "exclude",
    limit: int | None = None,
) -> list[dict]:
    """Examples of one split. `path` reads a local file instead of the Hub (for gsm8k train,
    validation and kd: the original train file, which is then carved). `critical_thinking` is the
    GSM-Plus rule for questions without an answer: "exclude" drops them (the count is logged),
    "no_number" keeps them and counts a response correct only if it names no number."""
    _check_name("task", task, TASKS)
    info = TASK_INFO[task]
    _check_name(f"split of {task}", split, info.splits)
    if critical_thinking not in ("exclude", "no_number"):
        raise ValueError(
            f"critical_thinking = {critical_thinking!r}; valid values: exclude, no_number"
        )
    if info.hub_id is None:
        cfg = synth_config or SynthConfig()
        make = {
            "synth_gsm": synth.synth_gsm,
            "synth_gsm_plus": synth.synth_gsm_plus,
            "synth_summ": synth.synth_summ,
        }[task]
        examples = make("train" if split == "kd" else split, cfg)
    else:
        examples = _load_real(task, split, path, critical_thinking)
    if split == "kd":  # the paper's ~1,000 random training examples for distillation
        examples = random.Random(f"kd/{task}/{kd_seed}").sample(examples, min(n_kd, len(examples)))
    return examples[:limit] if limit else examples


def _read_rows(task: str, split: str, path) -> list[dict]:
    info = TASK_INFO[task]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataUnavailableError(
                f"{task}: local file {path} not found; pass path= a jsonl, json or parquet file"
            )
        import pandas as pd

        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False)
        return frame.to_dict("records")
    hub_split = {"kd": "train", "validation": "train" if task == "gsm8k" else "validation"}.get(
        split, split
    )
    advice = (
        f"use the offline twin task '{info.twin}' (profiles smoke/cpu), pass path= a local "
        "jsonl/json/parquet file with the same columns, or set HF_HUB_OFFLINE=1 to use a cached "
        "copy"
    )
    if hub_unreachable():
        raise DataUnavailableError(
            f"cannot load {info.hub_id}: the Hugging Face Hub is unreachable; {advice}"
        )
    try:
        import datasets

        return list(datasets.load_dataset(info.hub_id, info.hub_config, split=hub_split))
    except (
        Exception
    ) as error:  # offline cache miss, network drop: all end the same way for the user
        raise DataUnavailableError(
            f"cannot load {info.hub_id} ({hub_split}) from the Hugging Face Hub "
            f"({type(error).__name__}: {str(error)[:120]}); {advice}"
        ) from None


def _load_real(task: str, split: str, path, critical_thinking: str) -> list[dict]:
    rows = _read_rows(task, split, path)
    if task == "gsm8k":
        if split in ("train", "validation", "kd"):  # 7,000 / 473 from the train set, fixed seed
            order = list(range(len(rows)))
            random.Random(SPLIT_SEED).shuffle(order)
            keep = order[:GSM8K_VALIDATION] if split == "validation" else order[GSM8K_VALIDATION:]
            rows = [rows[i] for i in sorted(keep)]
        return [
            dict(
                id=f"gsm8k-{split}-{i}",
                task=task,
                source=r["question"],
                target=r["answer"],
                answer=str(metrics.extract_answer(r["answer"])),
            )
            for i, r in enumerate(rows)
        ]
    if task == "gsm_plus":
        out, dropped = [], 0
        for i, r in enumerate(rows):
            answer = None if str(r["answer"]).strip() == "None" else str(r["answer"]).strip()
            if answer is None and critical_thinking == "exclude":
                dropped += 1
                continue
            out.append(
                dict(
                    id=f"gsm_plus-test-{i}",
                    task=task,
                    source=r["question"],
                    target=r["solution"],
                    answer=answer,
                    perturbation_type=r["perturbation_type"],
                )
            )
        if dropped:
            log.info(
                "gsm_plus: excluded %d critical-thinking rows without an answer (rule 'exclude')",
                dropped,
            )
        return out
    return _dialogsum_rows(rows, split)


def _dialogsum_rows(rows: list[dict], split: str) -> list[dict]:
    """DialogSum comes in two shapes: the original test file (summary1..3 per dialogue) and the Hub
    copy (one row per reference, the dialogue repeated). Both become one example per dialogue."""
    grouped: dict[str, dict] = {}
    for r in rows:
        refs = [
            r[k]
            for k in ("summary", "summary1", "summary2", "summary3")
            if isinstance(r.get(k), str)
        ]
        example = grouped.setdefault(
            r["dialogue"],
            dict(
                id=f"dialogsum-{split}-{r.get('fname', r.get('id'))}",
                task="dialogsum",
                source=r["dialogue"],
                references=[],
                topic=r.get("topic", r.get("topic1")),
            ),
        )
        example["references"].extend(refs)
    out = list(grouped.values())
    for example in out:
        example["target"] = example["references"][0]
    return out


# ---------------------------------------------------------------------------- prompts
_INSTRUCTION = {
    "gsm": "Solve the math problem step by step. End with '#### ' and the final answer.",
    "summ": "Summarize the following dialogue.",
}


def format_prompt(example: dict, style: str = "plain", tokenizer=None) -> str:
    """The model input. "plain" for base and tiny models; "chat" wraps the same request in the
    tokenizer's chat template (instruct models)."""
    kind = task_kind(example["task"])
    if style == "plain":
        if kind == "gsm":
            return f"Question: {example['source']}\nAnswer:"
        return f"{_INSTRUCTION['summ']}\n{example['source']}\nSummary:"
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "style='chat' needs a tokenizer with a chat template (an -Instruct model)"
            )
        message = f"{_INSTRUCTION[kind]}\n\n{example['source']}"
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"unknown prompt style {style!r}; valid: plain, chat")


def format_completion(example: dict, style: str = "plain") -> str:
    """The training response that follows the prompt (plain prompts end in ':', hence the space)."""
    return (" " if style == "plain" else "") + example["target"]


def score(task: str, predictions: list[str], examples: list[dict]) -> float:
    """The task's metric x 100: accuracy for GSM tasks, ROUGE-L (best reference) for
    summarisation."""
    if task_kind(task) == "gsm":
        return metrics.gsm_accuracy(predictions, [e["answer"] for e in examples])
    return metrics.mean_rouge_l(predictions, [e["references"] for e in examples])


# ---------------------------------------------------------------------------- a profile's splits,
# as token ids
def local_file(data_dir, task: str, split: str) -> Path:
    """The local copy of a Hub task's split under `data_dir` (see LOCAL_FILES)."""
    source = "train" if split == "kd" or (task == "gsm8k" and split == "validation") else split
    stems = LOCAL_FILES[(task, source)]
    for stem in stems:
        for suffix in LOCAL_SUFFIXES:
            path = Path(data_dir) / f"{stem}{suffix}"
            if path.is_file():
                return path
    raise DataUnavailableError(
        f"{task} {split}: no local copy in {data_dir}; put one of "
        f"{', '.join(s + '.jsonl' for s in stems)} there (or .json / .parquet)"
    )


def load_profile_task(profile: Profile, task: str, split: str) -> list[dict]:
    """A split as this profile uses it (synthetic sizes, KD budget, GSM-Plus rule, eval cap), read
    from the profile's `data_dir` when it names one and the task is a Hub task."""
    path = None
    if profile.data_dir and TASK_INFO[task].hub_id is not None:
        path = local_file(profile.data_dir, task, split)
        log.info("%s %s: %s", task, split, path)
    examples = load_task(
        task,
        split,
        path=path,
        synth_config=profile.synth,
        n_kd=profile.n_kd,
        critical_thinking=profile.gsm_plus_critical_thinking,
    )
    if split == "test" and profile.max_eval_examples:
        examples = examples[: profile.max_eval_examples]
    return examples


def prompt_style(profile: Profile) -> str:
    """How the profile's prompts are written: "chat" (the tokenizer's chat template) for -Instruct
    checkpoints, "plain" for base and tiny models."""
    return "chat" if profile.instruct else "plain"


def token_limits(profile: Profile, task: str) -> tuple[int, int]:
    """(max prompt tokens, max new tokens) for the task's kind."""
    if task_kind(task) == "gsm":
        return profile.max_prompt_tokens_gsm, profile.max_new_tokens_gsm
    return profile.max_prompt_tokens_summ, profile.max_new_tokens_summ


def _token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _cut_in_the_middle(tokenizer, example, style: str, limit: int, bos: list[int]) -> list[int]:
    """A prompt over `limit` tokens as the whole prompt's tokens with the middle of its source
    left out: the header (BOS, "Question:", a chat template's turn markers) and the question's end
    survive, where a cut from the left would lose them. The kept tokens are the whole prompt's own
    (character offsets say which tokens cover the source), so no merge at a cut edge changes."""
    marker = "\x00SOURCE\x00"
    before = format_prompt(dict(example, source=marker), style, tokenizer).split(marker)[0]
    start, end = len(before), len(before) + len(example["source"])
    encoded = tokenizer(
        format_prompt(example, style, tokenizer),
        add_special_tokens=False,
        return_offsets_mapping=True,
    )
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    first = next(i for i, (_, stop) in enumerate(offsets) if stop > start)
    last = max(i for i, (begin, _) in enumerate(offsets) if begin < end) + 1
    head, body, tail = bos + ids[:first], ids[first:last], ids[last:]
    room = limit - len(head) - len(tail)
    if room < 2:
        template = len(head) + len(tail)
        raise ConfigError(
            f"max_prompt_tokens = {limit} cannot hold the prompt's template ({template} tokens) "
            "and some of its text; raise it"
        )
    keep = room // 2
    return head + body[:keep] + body[len(body) - (room - keep) :] + tail


def tokenize_prompts(
    tokenizer, examples, max_prompt_tokens: int, style: str = "plain"
) -> list[list[int]]:
    """Prompt token ids, BOS first when the tokenizer has one. A prompt over max_prompt_tokens
    keeps its template and the start and end of its text, the middle cut (a line says how many)."""
    bos = (
        [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and style == "plain" else []
    )
    out, cut = [], 0
    for example in examples:
        ids = bos + _token_ids(tokenizer, format_prompt(example, style, tokenizer))
        if len(ids) > max_prompt_tokens:
            ids, cut = (
                _cut_in_the_middle(tokenizer, example, style, max_prompt_tokens, bos),
                cut + 1,
            )
        out.append(ids)
    if cut:
        print(
            f"data: {cut} of {len(examples)} prompts over {max_prompt_tokens} tokens: their "
            "template and the start and end of their text kept, the middle cut",
            flush=True,
        )
    return out


def tokenize_pairs(
    tokenizer, examples, max_prompt_tokens: int, max_new_tokens: int, style: str = "plain"
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) per example; the response is cut to max_new_tokens."""
    prompts = tokenize_prompts(tokenizer, examples, max_prompt_tokens, style)
    out = []
    for prompt, example in zip(prompts, examples):
        response = tokenizer(format_completion(example, style), add_special_tokens=False)[
            "input_ids"
        ]
        out.append((prompt, response[: max_new_tokens - 1] + [tokenizer.eos_token_id]))
    return out


def left_pad(prompts: list[list[int]], pad_token_id: int = 0, device=None):
    """Token lists -> (ids, attention mask) tensors, left-padded to the longest prompt."""
    import torch  # here, not at the top: reading and printing tasks needs no torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids, mask


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print a few examples of a task split.")
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("split")
    parser.add_argument("--path", default=None)
    parser.add_argument("-n", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="synth.FIELD=VALUE",
        help="a twin's knob, e.g. --set synth.summ_rejections=3",
    )
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    if set(overrides) - {"synth"}:
        parser.error("--set takes the twins' knobs here: synth.FIELD=VALUE")
    synth = overrides.get("synth", {})
    examples = load_task(args.task, args.split, path=args.path, synth_config=SynthConfig(**synth))
    print(f"{len(examples)} examples")
    for example in examples[: args.n]:
        print(format_prompt(example) + format_completion(example), "\n")


class EpochOrder:
    """Batches of example indices: a fresh shuffle by `rng` each epoch (a seeded rng gives the same
    order on every process)."""

    def __init__(self, examples: int, rng: random.Random):
        self.examples, self.rng, self.order, self.cursor = examples, rng, [], 0

    def next_batch(self, batch: int) -> list[int]:
        if self.cursor + batch > len(self.order):
            self.order, self.cursor = list(range(self.examples)), 0
            self.rng.shuffle(self.order)
        rows = self.order[self.cursor : self.cursor + batch]
        self.cursor += batch
        return rows


if __name__ == "__main__":
    from adaswitch_lib.errors import KitError

    try:
        main()
    except KitError as error:
        raise SystemExit(f"error: {error}")
