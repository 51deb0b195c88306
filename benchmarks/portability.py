"""Do the prepared pairs come out the same on another CPU? Prepare whole pairs under settings that
another host changes (torch threads, oneDNN's instruction cap), each in its own process and its own
scratch folder, and compare the teacher's and the base student's scores (issue bound: ±3 points).

    python benchmarks/portability.py --out /tmp/port --profile cpu-claims \
        --pairs tiny-qwen,tiny-llama --tasks synth_gsm --settings "1 thread,2 threads"

`--set FIELD=VALUE` prepares (and distills) a profile override, e.g. another warm start.
A setting's preparation is cached in `<out>/<setting>/.cache`, so a rerun only prepares what is
missing; a folder already prepared under that setting elsewhere may be linked there beforehand.
`--methods` adds one KD run per method and seed under every setting, compared the same way.
docs/reproducibility.md keeps the outcomes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

SETTINGS = {  # label (no commas: --settings is a comma list): (torch threads, environment)
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    # what a CPU without the BF16 instructions runs (oneDNN's own kernels)
    "1 thread no AVX512-BF16": (1, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    # what an older CPU runs: AVX2 products in oneDNN and MKL
    "1 thread AVX2": (1, {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
}
BOUND = 3.0  # points: the tolerance for a prepared pair's scores across settings


def folder(out: str, label: str) -> Path:
    return Path(out) / label.replace(" ", "-")


def run_in(out: str, label: str, command: list[str]) -> None:
    threads, extra = SETTINGS[label]
    where = folder(out, label)
    where.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", **extra)
    with open(where / "portability.log", "a") as log:
        subprocess.run(command, cwd=where, env=env, stdout=log, stderr=log, check=True)


def kit_command(args, verb: str, pair: str, task: str) -> list[str]:
    command = [sys.executable, "-m", "adaswitch_lib", verb, "--profile", args.profile]
    for item in args.set:
        command += ["--set", item]
    return command + ["--pair", pair, "--task", task]


def pair_scores(args, label: str, pair: str, task: str) -> dict:
    run_in(args.out, label, kit_command(args, "prepare", pair, task))
    from adaswitch_lib.config import get_profile, parse_overrides
    from adaswitch_lib.prepare import pair_key

    key = pair_key(get_profile(args.profile, **parse_overrides(args.set)), pair, task)
    metrics = next((folder(args.out, label) / ".cache" / "models").glob(f"*/{key}/metrics.json"))
    found = json.loads(metrics.read_text())
    return dict(teacher=found["teacher_score"], student=found["student_score"])


def kd_score(args, label: str, pair: str, task: str, method: str, seed: str) -> float:
    command = kit_command(args, "distill", pair, task) + ["--method", method, "--seed", seed]
    run_in(args.out, label, command + ["--results-dir", "results"])
    records = (folder(args.out, label) / "results").glob(f"*/runs/{pair}-{task}-{method}-s{seed}-*")
    record = json.loads((next(records) / "record.json").read_text())
    return record["metrics"][f"{task}_score"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="scratch folder, one subfolder per setting")
    parser.add_argument("--profile", default="cpu-claims")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE (repeatable)")
    parser.add_argument("--pairs", default="tiny-qwen,tiny-llama")
    parser.add_argument("--tasks", default="synth_gsm")
    parser.add_argument("--settings", default="1 thread,2 threads", help=", ".join(SETTINGS))
    parser.add_argument("--methods", default="", help="KD runs too, e.g. off_policy,adaswitch")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args(argv)
    labels = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [label for label in labels if label not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; choose from: {', '.join(SETTINGS)}")
    rows = []
    for pair, task in itertools.product(args.pairs.split(","), args.tasks.split(",")):
        for label in labels:
            scores = pair_scores(args, label, pair, task)
            for who, score in scores.items():
                rows.append(dict(pair=pair, task=task, who=who, setting=label, score=score))
            for method, seed in itertools.product(
                [m for m in args.methods.split(",") if m], args.seeds.split(",")
            ):
                score = kd_score(args, label, pair, task, method, seed)
                rows.append(
                    dict(pair=pair, task=task, who=f"{method} s{seed}", setting=label, score=score)
                )
    table = pd.DataFrame(rows).pivot_table(
        index=["pair", "task", "who"], columns="setting", values="score", sort=False
    )[labels]
    table["spread"] = table.max(axis=1) - table.min(axis=1)
    table[f"within ±{BOUND:g}"] = (table["spread"] <= BOUND).map({True: "yes", False: "no"})
    print(table.round(2).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
