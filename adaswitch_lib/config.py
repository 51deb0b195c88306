"""Configuration: named profiles, one run, and a stable run id.

A *profile* says where and how big: which teacher-student pairs, which tasks, model sizes for the
tiny offline pairs, data budgets and optimiser settings. A *run* is one cell of a table: a profile
plus a pair, a training task, a method and the method's knobs. `run_id(run)` hashes every field
that changes a result, so an identical run is recognised (and skipped) in any process.

    python -m adaswitch_lib.config            # print the profiles as a table
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import DIVERGENCES
from adaswitch_lib.methods import METHODS as _METHOD_TABLE

PAIRS = ("qwen", "llama", "qwen-small", "tiny-qwen", "tiny-llama")
TASKS = ("gsm8k", "gsm_plus", "dialogsum", "synth_gsm", "synth_gsm_plus", "synth_summ")
METHODS = tuple(_METHOD_TABLE)  # sft, seqkd, off_policy, on_policy, imitkd, skd, adaswitch (methods.py)
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
SKD_RULES = ("top_k", "top_p")
CONTINUATIONS = ("speculative", "exact")  # how a switched AdaSwitch row samples the teacher
PROFILES = ("smoke", "cpu", "cpu-full", "colab", "paper")


def _check_name(kind: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {kind} {value!r}; valid names: {', '.join(valid)}")


def _check_range(name: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    """Raise a one-line ConfigError naming the field and its allowed range."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if isinstance(value, float) and math.isnan(value):
        ok = False
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        brackets = ("(" if low_open or low is None else "[") + f"{lo}, {hi}" + (")" if high_open or high is None else "]")
        raise ConfigError(f"{name} = {value!r} is outside the allowed range {brackets}")


def _unaffecting(default):
    """A field that does not change a result (logging, paths): left out of the run id."""
    return field(default=default, metadata={"affects_result": False})


@dataclass(frozen=True)
class TinyShape:
    """Size of a tiny Qwen2- or Llama-style model trained here from scratch."""
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512

    def __post_init__(self):
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate"):
            _check_range(f"TinyShape.{name}", getattr(self, name), low=1)
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ConfigError(f"TinyShape: hidden ({self.hidden}) must divide by heads ({self.heads}) "
                              f"and heads by kv_heads ({self.kv_heads})")


@dataclass(frozen=True)
class SynthConfig:
    """Difficulty knobs of the offline twins (`synth_gsm`, `synth_gsm_plus`, `synth_summ`)."""
    min_steps: int = 2            # arithmetic steps per word problem
    max_steps: int = 4
    max_operand: int = 9          # largest +/- operand; 9 avoids two-digit carries (learnable on CPU)
    max_value: int = 99           # every intermediate value stays in [0, max_value]
    operations: str = "+-*/"      # subset of "+-*/"; * by 2..4, / by 2..5 (exact only)
    min_turns: int = 6            # dialogue turns in synth_summ (slot turns + small talk)
    max_turns: int = 10
    n_train_gsm: int = 7000       # split sizes follow the real tasks
    n_val_gsm: int = 473
    n_test_gsm: int = 1319
    n_train_summ: int = 12460
    n_val_summ: int = 500
    n_test_summ: int = 500        # dialogues; each has 3 reference summaries, like DialogSum test

    def __post_init__(self):
        _check_range("SynthConfig.min_steps", self.min_steps, low=1)
        _check_range("SynthConfig.max_steps", self.max_steps, low=self.min_steps)
        _check_range("SynthConfig.max_operand", self.max_operand, low=1)
        _check_range("SynthConfig.max_value", self.max_value, low=max(10, self.max_operand))
        if not self.operations or set(self.operations) - set("+-*/") or "+" not in self.operations:
            raise ConfigError(f"SynthConfig.operations = {self.operations!r}: use a subset of '+-*/' containing '+'")
        _check_range("SynthConfig.min_turns", self.min_turns, low=4)
        _check_range("SynthConfig.max_turns", self.max_turns, low=self.min_turns)
        for name in ("n_train_gsm", "n_val_gsm", "n_test_gsm", "n_train_summ", "n_val_summ", "n_test_summ"):
            _check_range(f"SynthConfig.{name}", getattr(self, name), low=1)


@dataclass(frozen=True)
class Profile:
    """Everything that is fixed for a whole reproduction: models, data, budgets (paper §3.3)."""
    name: str = "paper"
    pairs: tuple = ("qwen", "llama")                 # teacher -> student pairs of Table 1
    train_tasks: tuple = ("dialogsum", "gsm8k")      # tasks the teacher and students are trained on
    eval_tasks: tuple = ("dialogsum", "gsm8k", "gsm_plus")  # Table 1 columns; gsm_plus uses GSM students
    instruct: bool = False                           # -Instruct checkpoints + chat template (Hub pairs)
    # data
    n_kd: int = 1000                  # KD examples sampled from train with a fixed seed (paper: ~1,000)
    max_eval_examples: int = 0        # 0 = the whole test split
    max_prompt_tokens_gsm: int = 128  # paper: input/output 128/512 for GSM
    max_new_tokens_gsm: int = 512
    max_prompt_tokens_summ: int = 1024  # paper: 1024/256 for summarisation
    max_new_tokens_summ: int = 256
    gsm_plus_critical_thinking: str = "exclude"  # rule for GSM-Plus rows without an answer, see data.py
    # tiny offline pairs (ignored for Hub pairs)
    teacher_shape: TinyShape = TinyShape(layers=4, hidden=256, heads=4, kv_heads=2, intermediate=1024)
    student_shape: TinyShape = TinyShape(layers=2, hidden=128, heads=4, kv_heads=2, intermediate=512)
    tokenizer_vocab: int = 1024       # BPE vocabulary asked of `tokenizers` (the twins use fewer)
    synth: SynthConfig = SynthConfig()
    # teacher SFT (paper: lr 1e-5, warmup 0.1, dropout 0.1, 3 epochs, best validation loss)
    teacher_lr: float = 1e-5
    teacher_epochs: float = 3.0
    teacher_steps: int = 0            # > 0 overrides epochs with a fixed number of optimiser steps
    teacher_steps_summ: int = 0       # summarisation's own fixed steps (0 = as teacher_steps)
    teacher_batch_size: int = 16
    dropout: float = 0.1
    # base student (tiny pairs only): a short warm start that writes task-shaped text
    student_warmup_steps: int = 0
    student_warmup_steps_summ: int = 0  # summarisation's own warm start (0 = as student_warmup_steps)
    student_lr: float = 1e-5
    # distillation (paper: 3 epochs, lr 1e-5, warmup 0.1)
    kd_lr: float = 1e-5
    kd_epochs: float = 3.0
    kd_steps: int = 0                 # > 0 overrides epochs with a fixed number of optimiser steps
    kd_batch_size: int = 8            # sequences per optimiser step (all processes together)
    grad_accum_steps: int = 1         # micro-batches per step; the gradient equals the one-batch gradient
    length_groups: int = 1            # SFT and KD batches are computed as this many groups of rows of similar
                                      # length, each without the padding its rows share: the same loss up to
                                      # rounding; 2 makes CPU steps up to ~20 % faster, 1 (whole batches) suits GPUs
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0        # gradient clipping
    kd_mixed_precision: str = "auto"  # auto = bf16 on CUDA (fp16 where bf16 is unsupported), none on CPU
    # evaluation during distillation (Figures 5/8 every 10 steps over the first 100; 4/7 every 100)
    eval_every_early: int = 10        # evaluate every N steps ...
    eval_early_steps: int = 100       # ... over the first M steps,
    eval_every: int = 100             # then every N steps (and always at the last step)
    eval_subset: int = 200            # test examples scored at each evaluation (a fixed subset; 0 = none)
    val_loss_examples: int = 256      # validation examples for the validation loss (D on reference targets)
    # sampling (paper §3.3): student T=0.5 top-p=0.5, teacher T=0.2 top-p=0.5
    student_temperature: float = 0.5
    student_top_p: float = 0.5
    teacher_temperature: float = 0.2
    teacher_top_p: float = 0.5
    # precision and device
    dtype: str = "auto"               # the frozen teacher's (students keep fp32 master weights): auto = bf16
                                      # on CUDA, fp32 on CPU; or float32 / bfloat16
    train_bf16: bool = False          # bf16 autocast for SFT (~1.6x faster on AVX512-BF16 CPUs)
    eval_batch_size: int = 32
    log_every: int = _unaffecting(10)  # one log line every N steps under papermill
    # what ./run_all.sh runs (plan.py); these change which runs are made, never a run's result
    seeds: tuple = _unaffecting((0,))        # seeds of every run of Table 1 (and of the figure grids)
    figure_pairs: tuple = _unaffecting(())   # pairs of the Figure 3 and 6 grids; () = every pair
    figure_tasks: tuple = _unaffecting(())   # training tasks of those grids; () = every training task
    fig3_methods: tuple = _unaffecting(("off_policy", "on_policy", "imitkd", "skd", "adaswitch"))
    fig3_divergences: tuple = _unaffecting(("forward_kl", "jsd", "reverse_kl"))
    fig6_k: tuple = _unaffecting((1.0, 2.0, 3.0, 4.0, 5.0))  # K values at L = 10 (paper Figure 6)
    fig6_window: tuple = _unaffecting((5, 10, 15, 20))       # L values at K = 3

    def __post_init__(self):
        _check_name("profile", self.name, PROFILES)
        for pair in self.pairs:
            _check_name("pair", pair, PAIRS)
        for task in (*self.train_tasks, *self.eval_tasks):
            _check_name("task", task, TASKS)
        if self.gsm_plus_critical_thinking not in ("exclude", "no_number"):
            raise ConfigError(f"gsm_plus_critical_thinking = {self.gsm_plus_critical_thinking!r}; "
                              "valid values: exclude, no_number")
        _check_name("kd_mixed_precision", self.kd_mixed_precision, MIXED_PRECISION)
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds = {self.seeds!r}: give one or more integers >= 0")
        for name, values, valid in (("figure_pairs", self.figure_pairs, self.pairs),
                                    ("figure_tasks", self.figure_tasks, self.train_tasks),
                                    ("fig3_methods", self.fig3_methods, METHODS),
                                    ("fig3_divergences", self.fig3_divergences, DIVERGENCES)):
            for value in values:
                _check_name(name[:-1].replace("fig3_", ""), value, valid)
        for k in self.fig6_k:
            _check_range("fig6_k (K)", k, low=0, low_open=True)
        for window in self.fig6_window:
            _check_range("fig6_window (L)", window, low=1)
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"dtype = {self.dtype!r}; valid values: auto, float32, bfloat16")
        for name in ("n_kd", "max_prompt_tokens_gsm", "max_new_tokens_gsm", "max_prompt_tokens_summ",
                     "max_new_tokens_summ", "tokenizer_vocab", "teacher_batch_size", "kd_batch_size",
                     "eval_batch_size", "log_every", "grad_accum_steps", "length_groups", "eval_every_early",
                     "eval_every"):
            _check_range(name, getattr(self, name), low=1)
        if self.kd_batch_size % self.grad_accum_steps:
            raise ConfigError(f"kd_batch_size ({self.kd_batch_size}) must be a multiple of grad_accum_steps "
                              f"({self.grad_accum_steps})")
        for name in ("max_eval_examples", "teacher_steps", "kd_steps", "student_warmup_steps",
                     "teacher_steps_summ", "student_warmup_steps_summ", "eval_early_steps", "eval_subset",
                     "val_loss_examples"):
            _check_range(name, getattr(self, name), low=0)
        for name in ("teacher_lr", "kd_lr", "student_lr", "teacher_epochs", "kd_epochs", "max_grad_norm"):
            _check_range(name, getattr(self, name), low=0, low_open=True)
        _check_range("dropout", self.dropout, low=0, high=1, high_open=True)
        _check_range("warmup_ratio", self.warmup_ratio, low=0, high=1)
        for name in ("student_temperature", "teacher_temperature"):
            _check_range(name, getattr(self, name), low=0, low_open=True)
        for name in ("student_top_p", "teacher_top_p"):
            _check_range(name, getattr(self, name), low=0, high=1, low_open=True)

    @property
    def offline(self) -> bool:
        """True when every pair is a tiny pair trained here (no Hub access needed)."""
        return all(p.startswith("tiny-") for p in self.pairs)


_TINY = dict(pairs=("tiny-qwen", "tiny-llama"), train_tasks=("synth_summ", "synth_gsm"),
             eval_tasks=("synth_summ", "synth_gsm", "synth_gsm_plus"),
             max_prompt_tokens_gsm=96, max_new_tokens_gsm=64,
             max_prompt_tokens_summ=256, max_new_tokens_summ=48)

_PROFILES = {
    # seconds per run: tests and CI; models are tiny and barely trained
    "smoke": dict(_TINY, name="smoke", n_kd=32, max_eval_examples=16,
                  teacher_shape=TinyShape(2, 64, 4, 2, 128), student_shape=TinyShape(1, 32, 2, 1, 64),
                  synth=SynthConfig(n_train_gsm=400, n_val_gsm=40, n_test_gsm=40,
                                    n_train_summ=400, n_val_summ=40, n_test_summ=20),
                  teacher_lr=3e-3, teacher_steps=30, teacher_batch_size=16, dropout=0.0,
                  student_warmup_steps=5, student_lr=3e-3,
                  kd_lr=1e-3, kd_steps=4, kd_batch_size=8, length_groups=2, eval_batch_size=16, log_every=2,
                  eval_every_early=2, eval_early_steps=4, eval_every=4, eval_subset=8, val_loss_examples=16,
                  figure_pairs=("tiny-qwen",), figure_tasks=("synth_gsm",), fig3_methods=("on_policy", "adaswitch"),
                  fig3_divergences=("forward_kl", "reverse_kl"), fig6_k=(1.0, 3.0), fig6_window=(5, 10)),
    # the embedded default: both tiny pairs on the twins, on a laptop CPU, no network
    # a bf16 teacher: its scoring and draft-verify passes run 1.4-1.7x faster on CPUs with bf16 units
    # (benchmarks/bench_step.py --teacher-dtype); the paper's teachers run in bf16 too
    "cpu": dict(_TINY, name="cpu", n_kd=1000, max_eval_examples=400, train_bf16=True, dtype="bfloat16",
                teacher_lr=2e-3, teacher_steps=700, teacher_steps_summ=400, teacher_batch_size=32, dropout=0.0,
                # base student: a warm start that ends just before its phase transition on synth_gsm
                # (16 % accuracy; 700 steps cross it: 58 %), so that the KD budget carries it across
                student_warmup_steps=500, student_warmup_steps_summ=40, student_lr=2e-3,
                kd_lr=2e-3, kd_steps=500, kd_batch_size=16, eval_batch_size=100,
                # rows grouped by length: teacher SFT steps ~1.2x, off-policy KD steps ~1.1x faster
                # (benchmarks/bench_padding.py)
                length_groups=2,
                eval_subset=100, val_loss_examples=128,
                # the figure grids shrunk to fit the 60-minute budget: one pair, synth_gsm, fewer points
                # (Figure 3: AdaSwitch and its on-policy base under forward and reverse KL, the two ends of
                # the JSD family; cpu-full has every method and JSD too)
                figure_pairs=("tiny-qwen",), figure_tasks=("synth_gsm",),
                fig3_methods=("on_policy", "adaswitch"), fig3_divergences=("forward_kl", "reverse_kl"),
                fig6_k=(1.0, 3.0, 5.0), fig6_window=(5, 10, 20)),
    # the cpu profile's models and runs, with every figure grid in full and 3 seeds (hours on 2 cores)
    "cpu-full": None,
    # one 16-24 GB Colab GPU, an afternoon
    "colab": dict(name="colab", pairs=("qwen-small",), instruct=True, n_kd=1000, max_eval_examples=500,
                  kd_epochs=1.0, kd_batch_size=4),
    # the paper's setting: one 80 GB GPU or more via `accelerate launch`
    "paper": dict(name="paper"),
}


_PROFILES["cpu-full"] = dict({k: v for k, v in _PROFILES["cpu"].items()
                              if not k.startswith(("figure_", "fig3_", "fig6_"))}, name="cpu-full", seeds=(0, 1, 2))


def get_profile(name: str, **overrides) -> Profile:
    """A named profile, with optional field overrides (validated like any profile)."""
    _check_name("profile", name, PROFILES)
    fields = {f.name for f in dataclasses.fields(Profile)}
    for key in overrides:
        if key not in fields:
            raise ConfigError(f"unknown profile field {key!r}; valid fields: {', '.join(sorted(fields))}")
    return Profile(**{**_PROFILES[name], **overrides})


@dataclass(frozen=True)
class RunConfig:
    """One distillation run: a cell of Table 1 (or a point of a figure)."""
    profile: Profile
    pair: str = "tiny-qwen"           # teacher -> student pair
    task: str = "synth_gsm"           # training task; GSM-Plus is evaluated with the GSM student
    method: str = "adaswitch"         # how targets are made and scored (methods.py)
    seed: int = 0                     # data order, sampling draws and ImitKD's coins
    divergence: str = "forward_kl"    # D in the loss and in the switch rule (paper: KL)
    jsd_beta: float = 0.5             # mixture weight for divergence="jsd" (TRL convention)
    skew_alpha: float = 0.1           # for skew_kl / skew_reverse_kl (DistiLLM default)
    loss_reduction: str = "sequence"  # "sequence": token mean per sequence, then batch mean (Eq. 2); "token"
    adaswitch_k: float = 3.0          # switch when d_i > K * mean of the previous L divergences
    adaswitch_window: int = 10        # L: window length, also the minimum exploration length
    adaswitch_floor: float = 0.0      # optional absolute floor on the threshold; 0 = the paper's rule
    skd_rule: str = "top_k"           # accept a student token inside the teacher's top-k or top-p set
    skd_top_k: int = 25               # SKD paper default
    skd_top_p: float = 0.5            # AdaSwitch's "K_skd = 0.5" read as a nucleus
    imitkd_beta_start: float = 1.0    # ImitKD: probability of ground truth, decays linearly to 0
    teacher_continuation: str = "exact"  # AdaSwitch after the switch: teacher token by token, or speculative (same distribution)
    results_dir: str = _unaffecting("results")  # records go to <results_dir>/<profile>/runs/<run_id>/

    def __post_init__(self):
        if not isinstance(self.profile, Profile):
            raise ConfigError("RunConfig.profile must be a Profile (use get_profile(name))")
        _check_name("pair", self.pair, PAIRS)
        _check_name("task", self.task, TASKS)
        _check_name("method", self.method, METHODS)
        _check_name("divergence", self.divergence, DIVERGENCES)
        _check_name("skd_rule", self.skd_rule, SKD_RULES)
        _check_name("teacher_continuation", self.teacher_continuation, CONTINUATIONS)
        _check_name("loss_reduction", self.loss_reduction, ("sequence", "token"))
        _check_range("seed", self.seed, low=0)
        _check_range("jsd_beta", self.jsd_beta, low=0, high=1)
        _check_range("skew_alpha", self.skew_alpha, low=0, high=1, high_open=True)
        _check_range("adaswitch_k (K)", self.adaswitch_k, low=0, low_open=True)
        _check_range("adaswitch_window (L)", self.adaswitch_window, low=1)
        _check_range("adaswitch_floor", self.adaswitch_floor, low=0)
        _check_range("skd_top_k", self.skd_top_k, low=1)
        _check_range("skd_top_p", self.skd_top_p, low=0, high=1, low_open=True)
        _check_range("imitkd_beta_start", self.imitkd_beta_start, low=0, high=1)


def plain(obj, result_only: bool = False):
    """A config as plain JSON values: nested dataclasses as dicts, tuples as lists, infinities as
    "inf" (JSON has none; K = inf is a valid "never switch" setting). `result_only` leaves out the
    fields that change no result (paths, logging, which runs are made). The one config-to-JSON path:
    records, run ids and cache keys all use it."""
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name), result_only) for f in dataclasses.fields(obj)
                if not (result_only and f.metadata.get("affects_result", True) is False)}
    if isinstance(obj, (tuple, list)):
        return [plain(v, result_only) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return str(obj)
    return obj


def config_hash(obj, length: int = 12) -> str:
    """Stable hex digest of a config dataclass: same fields, same hash, on any machine."""
    blob = json.dumps(plain(obj, result_only=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def run_id(run: RunConfig) -> str:
    """Readable and unique: `<pair>-<task>-<method>-s<seed>-<hash of every result-changing field>`."""
    return f"{run.pair}-{run.task}-{run.method}-s{run.seed}-{config_hash(run)}"


def baseline_id(profile: Profile, pair: str, task: str, who: str) -> str:
    """The record id of Table 1's Teacher or Student row (`who`) of a pair on a task."""
    return f"{pair}-{task}-{who}-{config_hash(profile)}"


def field_comments(cls) -> dict[str, str]:
    """The comment beside each field of a config dataclass: its help text on the command line."""
    import inspect
    import re
    out = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def flat_fields(obj, prefix: str = "") -> dict:
    """Every field of a (nested) config as `name: value` with nested fields flattened
    (`synth.max_operand`) and shapes written compactly (`4x256 h4 kv2 ff1024`)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, TinyShape):
            out[prefix + f.name] = (f"{value.layers}x{value.hidden} h{value.heads} kv{value.kv_heads} "
                                    f"ff{value.intermediate}")
        elif dataclasses.is_dataclass(value):
            out.update(flat_fields(value, f"{prefix}{f.name}."))
        elif isinstance(value, tuple):
            out[prefix + f.name] = ",".join(map(str, value))
        else:
            out[prefix + f.name] = value
    return out


if __name__ == "__main__":
    import pandas as pd
    table = pd.DataFrame({name: flat_fields(get_profile(name)) for name in PROFILES})
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 40):
        print(table.to_string(line_width=160))  # wraps the profiles into blocks a screen wide
