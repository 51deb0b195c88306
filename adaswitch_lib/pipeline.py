"""The main job behind `./run_all.sh`: the steps that regenerate the results of one profile.

    python -m adaswitch_lib.pipeline --profile smoke
    python -m adaswitch_lib.pipeline --profile cpu --steps data

Each step is a function of the profile; later steps (models, distillation runs, tables, figures)
slot into STEPS in order. A step that finds its outputs already written skips the work.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from adaswitch_lib.config import PROFILES, Profile, get_profile
from adaswitch_lib.data import TASK_INFO, load_profile_task
from adaswitch_lib.errors import KitError


def task_splits(profile: Profile) -> dict[str, tuple[str, ...]]:
    """Which splits of which task a profile needs: train tasks in full, eval-only tasks' test."""
    out = {task: ("train", "validation", "kd", "test") for task in profile.train_tasks}
    for task in profile.eval_tasks:
        out.setdefault(task, ("test",))
    return out


def step_data(profile: Profile) -> None:
    """Load (or generate) every split the profile needs and print their sizes."""
    import pandas as pd
    rows = []
    for task, splits in task_splits(profile).items():
        start = time.perf_counter()
        sizes = {split: len(load_profile_task(profile, task, split)) for split in splits}
        rows.append(dict(task=task, source=TASK_INFO[task].hub_id or "synthetic", **sizes,
                         seconds=round(time.perf_counter() - start, 2)))
    print(pd.DataFrame(rows).convert_dtypes().astype(str).replace("<NA>", "-").to_string(index=False))


def step_models(profile: Profile) -> None:
    """Prepare (or find) the teacher and base student of every pair for every training task, and
    print their test metrics (accuracy x 100 for GSM tasks, ROUGE-L for summarisation), with the
    base student fine-tuned on the KD budget beside them."""
    import json
    import pandas as pd
    from adaswitch_lib.prepare import prepare_pair, sft_budget_check
    rows = []
    for pair in profile.pairs:
        for task in profile.train_tasks:
            folder = prepare_pair(profile, pair, task)
            report = json.loads((folder / "metrics.json").read_text())
            check = sft_budget_check(profile, folder, task)
            rows.append(dict(pair=pair, task=task, teacher=round(report["teacher_score"], 2),
                             base_student=round(report["student_score"], 2),
                             student_sft_kd_budget=round(check["score"], 2),
                             teacher_sft_s=round(report["teacher_sft"]["seconds"]),
                             student_warm_start_s=round(report.get("student_warm_start", {}).get("seconds", 0))))
    print(pd.DataFrame(rows).to_string(index=False))


STEPS = {"data": step_data, "models": step_models}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help=f"one of: {', '.join(PROFILES)}")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of: {', '.join(STEPS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        profile = get_profile(args.profile)
        steps = [s for s in args.steps.split(",") if s]
        for step in steps:
            if step not in STEPS:
                raise KitError(f"unknown step {step!r}; valid steps: {', '.join(STEPS)}")
        for step in steps:
            start = time.perf_counter()
            print(f"==> [{profile.name}] {step}")
            STEPS[step](profile)
            print(f"    {step} done in {time.perf_counter() - start:.1f} s")
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
