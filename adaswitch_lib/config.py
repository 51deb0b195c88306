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
from pathlib import Path

from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import DIVERGENCES
from adaswitch_lib.methods import METHODS as _METHOD_TABLE

PAIRS = ("qwen", "llama", "qwen-small", "tiny-qwen", "tiny-llama")
TASKS = ("gsm8k", "gsm_plus", "dialogsum", "synth_gsm", "synth_gsm_plus", "synth_summ")
# sft, seqkd, off_policy, on_policy, imitkd, skd, adaswitch (methods.py)
METHODS = tuple(_METHOD_TABLE)
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
SKD_RULES = ("top_k", "top_p")
KD_OPTIMIZERS = ("adamw", "adamw_8bit")
# which kernels PyTorch, MKL and oneDNN run on a CPU (kernels.py): each its own, or AVX2 for all
CPU_KERNELS = ("native", "avx2")
CONTINUATIONS = ("speculative", "exact")  # how a switched AdaSwitch row samples the teacher
# a run may also leave the choice to the first step's timing ("auto", distill.choose_continuation)
RUN_CONTINUATIONS = (*CONTINUATIONS, "auto")
PROFILES = ("smoke", "cpu", "cpu-claims", "cpu-full", "colab", "paper")
# Profile fields that replace a Hub pair's checkpoints
CHECKPOINT_FIELDS = ("teacher_model", "student_model", "teacher_revision", "student_revision")


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
        brackets = (
            ("(" if low_open or low is None else "[")
            + f"{lo}, {hi}"
            + (")" if high_open or high is None else "]")
        )
        raise ConfigError(f"{name} = {value!r} is outside the allowed range {brackets}")


def _field(default, help: str, affects_result: bool = True, omit_default: bool = False):
    """A config field with its help text (shown by the command line and `python -m
    adaswitch_lib.config`). `affects_result=False` marks a field that changes no result (logging,
    paths, which runs are made): it is left out of run ids. `omit_default=True` leaves the field
    out of run ids and cache keys while it keeps its default, so that adding it changes no
    existing id."""
    return field(
        default=default,
        metadata={"help": help, "affects_result": affects_result, "omit_default": omit_default},
    )


@dataclass(frozen=True)
class TinyShape:
    """Size of a tiny Qwen2- or Llama-style model trained here from scratch."""

    layers: int = _field(2, "transformer layers")
    hidden: int = _field(128, "hidden size")
    heads: int = _field(4, "attention heads")
    kv_heads: int = _field(2, "key-value heads (grouped-query attention)")
    intermediate: int = _field(512, "MLP intermediate size")

    def __post_init__(self):
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate"):
            _check_range(f"TinyShape.{name}", getattr(self, name), low=1)
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ConfigError(
                f"TinyShape: hidden ({self.hidden}) must divide by heads ({self.heads}) "
                f"and heads by kv_heads ({self.kv_heads})"
            )


@dataclass(frozen=True)
class SynthConfig:
    """Difficulty knobs of the offline twins (`synth_gsm`, `synth_gsm_plus`, `synth_summ`)."""

    min_steps: int = _field(2, "fewest arithmetic steps per word problem")
    max_steps: int = _field(4, "most arithmetic steps per word problem")
    max_operand: int = _field(
        9, "largest +/- operand; 9 avoids two-digit carries (learnable on CPU)"
    )
    max_value: int = _field(99, "every intermediate value stays in [0, max_value]")
    operations: str = _field("+-*/", 'subset of "+-*/"; * by 2..4, / by 2..5 (exact only)')
    min_turns: int = _field(6, "fewest dialogue turns in synth_summ (slot turns + small talk)")
    max_turns: int = _field(10, "most dialogue turns in synth_summ")
    summ_rejections: int = _field(
        0,
        "synth_summ made harder: after agreeing, the speakers renegotiate one slot (a day, time, "
        "city, ...) through up to this many turned-down proposals, and the summaries give the "
        "value finally accepted; 0 keeps every value stated once",
        omit_default=True,
    )
    n_train_gsm: int = _field(7000, "synth_gsm train problems (split sizes follow the real tasks)")
    n_val_gsm: int = _field(473, "synth_gsm validation problems")
    n_test_gsm: int = _field(1319, "synth_gsm test problems")
    n_train_summ: int = _field(12460, "synth_summ train dialogues")
    n_val_summ: int = _field(500, "synth_summ validation dialogues")
    n_test_summ: int = _field(500, "dialogues; each has 3 reference summaries, like DialogSum test")

    def __post_init__(self):
        _check_range("SynthConfig.min_steps", self.min_steps, low=1)
        _check_range("SynthConfig.max_steps", self.max_steps, low=self.min_steps)
        _check_range("SynthConfig.max_operand", self.max_operand, low=1)
        _check_range("SynthConfig.max_value", self.max_value, low=max(10, self.max_operand))
        if not self.operations or set(self.operations) - set("+-*/") or "+" not in self.operations:
            raise ConfigError(
                f"SynthConfig.operations = {self.operations!r}: use a subset of '+-*/' containing "
                "'+'"
            )
        _check_range("SynthConfig.min_turns", self.min_turns, low=4)
        _check_range("SynthConfig.max_turns", self.max_turns, low=self.min_turns)
        # 3 keeps the longest dialogue inside the cpu profiles' 256 prompt tokens
        # (docs/calibration.md)
        _check_range("SynthConfig.summ_rejections", self.summ_rejections, low=0, high=3)
        for name in (
            "n_train_gsm",
            "n_val_gsm",
            "n_test_gsm",
            "n_train_summ",
            "n_val_summ",
            "n_test_summ",
        ):
            _check_range(f"SynthConfig.{name}", getattr(self, name), low=1)


# the allowed range of each numeric profile field
_PROFILE_RANGES = (
    (
        "n_kd max_prompt_tokens_gsm max_new_tokens_gsm max_prompt_tokens_summ max_new_tokens_summ "
        "tokenizer_vocab teacher_batch_size kd_batch_size eval_batch_size log_every "
        "grad_accum_steps "
        "length_groups eval_every_early eval_every sft_val_examples lora_rank",
        dict(low=1),
    ),
    (
        "max_eval_examples teacher_steps kd_steps student_warmup_steps teacher_steps_summ "
        "student_warmup_steps_summ eval_early_steps eval_subset val_loss_examples "
        "unclaimed_seed_count",
        dict(low=0),
    ),
    (
        "teacher_lr kd_lr student_lr teacher_epochs kd_epochs max_grad_norm student_temperature "
        "teacher_temperature",
        dict(low=0, low_open=True),
    ),
    ("dropout", dict(low=0, high=1, high_open=True)),
    ("warmup_ratio kd_warmup_ratio", dict(low=0, high=1)),
    ("student_top_p teacher_top_p", dict(low=0, high=1, low_open=True)),
)


@dataclass(frozen=True)
class Profile:
    """Everything that is fixed for a whole reproduction: models, data, budgets (paper §3.3)."""

    name: str = _field(
        "paper", "the profile's name: smoke, cpu, cpu-claims, cpu-full, colab or paper"
    )
    pairs: tuple = _field(("qwen", "llama"), "teacher -> student pairs of Table 1")
    train_tasks: tuple = _field(
        ("dialogsum", "gsm8k"), "tasks the teacher and students are trained on"
    )
    eval_tasks: tuple = _field(
        ("dialogsum", "gsm8k", "gsm_plus"), "Table 1 columns; gsm_plus uses GSM students"
    )
    instruct: bool = _field(False, "-Instruct checkpoints + chat template (Hub pairs)")
    # Hub pairs: other checkpoints (a local folder, a mirror's id) and pinned revisions
    teacher_model: str = _field(
        "", 'the teacher: a Hub id or a local folder ("" = the pair\'s own)', omit_default=True
    )
    student_model: str = _field(
        "",
        'the base student and the tokenizer: a Hub id or a local folder ("" = the pair\'s own)',
        omit_default=True,
    )
    teacher_revision: str = _field(
        "", 'a Hub branch, tag or commit of the teacher ("" = the newest)', omit_default=True
    )
    student_revision: str = _field(
        "", 'a Hub branch, tag or commit of the student ("" = the newest)', omit_default=True
    )
    data_dir: str = _field(
        "",
        "a folder of local copies of the Hub tasks' files (data.LOCAL_FILES names them); "
        '"" = the Hub. Meant for the same data, so it is left out of run ids',
        affects_result=False,
    )
    # data
    n_kd: int = _field(1000, "KD examples sampled from train with a fixed seed (paper: ~1,000)")
    max_eval_examples: int = _field(0, "0 = the whole test split")
    max_prompt_tokens_gsm: int = _field(128, "prompt tokens kept on GSM tasks (paper: 128)")
    max_new_tokens_gsm: int = _field(512, "response tokens generated on GSM tasks (paper: 512)")
    max_prompt_tokens_summ: int = _field(1024, "prompt tokens kept on summarisation (paper: 1024)")
    max_new_tokens_summ: int = _field(
        256, "response tokens generated on summarisation (paper: 256)"
    )
    gsm_plus_critical_thinking: str = _field(
        "exclude", "rule for GSM-Plus rows without an answer, see data.py"
    )
    # tiny offline pairs (ignored for Hub pairs)
    teacher_shape: TinyShape = _field(
        TinyShape(layers=4, hidden=256, heads=4, kv_heads=2, intermediate=1024),
        "the tiny teacher's size (tiny pairs only)",
    )
    student_shape: TinyShape = _field(
        TinyShape(layers=2, hidden=128, heads=4, kv_heads=2, intermediate=512),
        "the tiny student's size (tiny pairs only)",
    )
    tokenizer_vocab: int = _field(
        1024, "BPE vocabulary asked of `tokenizers` (the twins use fewer)"
    )
    synth: SynthConfig = _field(SynthConfig(), "difficulty and split sizes of the offline twins")
    # teacher SFT (paper: lr 1e-5, warmup 0.1, dropout 0.1, 3 epochs, best validation loss)
    teacher_lr: float = _field(1e-5, "teacher SFT learning rate (paper: 1e-5)")
    teacher_epochs: float = _field(
        3.0, "teacher SFT epochs (paper: 3; the checkpoint with the best validation NLL is kept)"
    )
    teacher_steps: int = _field(0, "> 0 overrides epochs with a fixed number of optimiser steps")
    teacher_steps_summ: int = _field(0, "summarisation's own fixed steps (0 = as teacher_steps)")
    teacher_batch_size: int = _field(16, "teacher SFT batch size")
    dropout: float = _field(0.1, "dropout while fine-tuning (paper: 0.1)")
    teacher_sft: str = _field(
        "full",
        '"full": every weight, over fp32 master weights with AdamW (16 bytes a parameter); "lora": '
        "low-rank adapters on every linear layer (peft), merged into the weights afterwards: the "
        "teacher's SFT on 16-24 GB GPUs (Hub pairs; docs/gpu.md)",
        omit_default=True,
    )
    lora_rank: int = _field(16, "the adapters' rank when teacher_sft = lora", omit_default=True)
    sft_val_examples: int = _field(
        512, "validation examples whose NLL picks the best SFT checkpoint", omit_default=True
    )
    # base student (tiny pairs only): a short warm start that writes task-shaped text
    student_warmup_steps: int = _field(
        0, "the tiny base student's warm start: steps of SFT that leave it writing task-shaped text"
    )
    student_warmup_steps_summ: int = _field(
        0, "summarisation's own warm start (0 = as student_warmup_steps)"
    )
    student_warmup_operations: str = _field(
        "",
        "synth_gsm only: the warm start sees only the problems whose steps all use these "
        'operations (e.g. "+-"), so it converges on them and KD has the rest to teach; "" = every '
        "problem (docs/calibration.md)",
        omit_default=True,
    )
    student_lr: float = _field(1e-5, "learning rate of the base student's warm start")
    # distillation (paper: 3 epochs, lr 1e-5, warmup 0.1)
    kd_lr: float = _field(1e-5, "distillation learning rate (paper: 1e-5)")
    kd_epochs: float = _field(3.0, "distillation epochs over the KD examples (paper: 3)")
    kd_steps: int = _field(0, "> 0 overrides epochs with a fixed number of optimiser steps")
    kd_batch_size: int = _field(8, "sequences per optimiser step (all processes together)")
    grad_accum_steps: int = _field(
        1, "micro-batches per step; the gradient equals the one-batch gradient"
    )
    kd_optimizer: str = _field(
        "adamw",
        '"adamw": the student\'s AdamW states in fp32 (8 bytes a parameter); "adamw_8bit": '
        "bitsandbytes' block-wise 8-bit AdamW (2 bytes a parameter), the route that fits colab's "
        "KD on a 16 GB T4 (docs/gpu.md)",
        omit_default=True,
    )
    length_groups: int = _field(
        1,
        "SFT and KD batches computed as this many groups of rows of similar length, each without "
        "the padding its rows share (the same loss up to rounding; pays on CPU, 1 suits GPUs)",
    )
    warmup_ratio: float = _field(
        0.1, "share of SFT steps (teacher, warm start) with a learning-rate warm-up (paper: 0.1)"
    )
    kd_warmup_ratio: float = _field(
        0.1,
        "share of KD steps with a linear learning-rate warm-up (paper: 0.1); a gentler start "
        "keeps a warm-started student from dipping (docs/calibration.md)",
        omit_default=True,
    )
    max_grad_norm: float = _field(1.0, "gradient clipping")
    kd_mixed_precision: str = _field(
        "auto", "auto = bf16 on CUDA (fp16 where bf16 is unsupported), none on CPU"
    )
    # evaluation during distillation (Figures 5/8 every 10 steps over the first 100; 4/7 every 100)
    eval_every_early: int = _field(
        10, "evaluate every N steps over the first eval_early_steps (Figures 5 and 8)"
    )
    eval_early_steps: int = _field(100, "... over the first M steps,")
    eval_every: int = _field(100, "then every N steps (and always at the last step)")
    eval_subset: int = _field(
        200, "test examples scored at each evaluation (a fixed subset; 0 = none)"
    )
    val_loss_examples: int = _field(
        256, "validation examples for the validation loss (D on reference targets)"
    )
    # sampling (paper §3.3): student T=0.5 top-p=0.5, teacher T=0.2 top-p=0.5
    student_temperature: float = _field(0.5, "the student's sampling temperature (paper: 0.5)")
    student_top_p: float = _field(0.5, "the student's top-p (paper: 0.5)")
    teacher_temperature: float = _field(0.2, "the teacher's sampling temperature (paper: 0.2)")
    teacher_top_p: float = _field(0.5, "the teacher's top-p (paper: 0.5)")
    # precision and device
    dtype: str = _field(
        "auto",
        "the frozen teacher's dtype (students keep fp32 master weights): auto = bf16 on CUDA, fp32 "
        "on CPU; or float32 / bfloat16",
    )
    train_bf16: bool = _field(
        False,
        "bf16 autocast for SFT (faster on CPUs with bf16 units; rounds differently, see "
        "docs/reproducibility.md)",
    )
    cpu_kernels: str = _field(
        "native",
        "native: each math library takes the CPU's widest instructions; avx2: all pinned to AVX2, "
        "meant to give the same fp32 bits on any x86 CPU at one thread count (kernels.py)",
        omit_default=True,
    )
    eval_batch_size: int = _field(32, "batch size of greedy evaluation and validation scoring")
    gradient_checkpointing: bool = _field(
        False,
        "recompute each layer's activations in the backward pass instead of keeping them (SFT and "
        "the KD student's update; sampling keeps its KV cache): memory for compute, same numbers",
        affects_result=False,
    )
    log_every: int = _field(10, "one log line every N steps under papermill", affects_result=False)
    # what ./run_all.sh runs (plan.py); these change which runs are made, never a run's result
    seeds: tuple = _field(
        (0,), "seeds of every run of Table 1 (and of the figure grids)", affects_result=False
    )
    unclaimed_seed_count: int = _field(
        0,
        "how many of `seeds` (the first) the runs no claim of claims.md reads take (Table 1's SUMM "
        "rows other than off-policy, on-policy and AdaSwitch; Figure 3's grid); 0 = every seed",
        affects_result=False,
    )
    figure_pairs: tuple = _field(
        (), "pairs of the Figure 3 and 6 grids; () = every pair", affects_result=False
    )
    figure_tasks: tuple = _field(
        (), "training tasks of those grids; () = every training task", affects_result=False
    )
    fig3_methods: tuple = _field(
        ("off_policy", "on_policy", "imitkd", "skd", "adaswitch"),
        "methods of the Figure 3 grid",
        affects_result=False,
    )
    fig3_divergences: tuple = _field(
        ("forward_kl", "jsd", "reverse_kl"),
        "divergences of the Figure 3 grid",
        affects_result=False,
    )
    fig6_k: tuple = _field(
        (1.0, 2.0, 3.0, 4.0, 5.0), "K values at L = 10 (paper Figure 6)", affects_result=False
    )
    fig6_window: tuple = _field((5, 10, 15, 20), "L values at K = 3", affects_result=False)

    def __post_init__(self):
        self._check_names()
        self._check_grids()
        self._check_ranges()

    def _check_names(self):
        _check_name("profile", self.name, PROFILES)
        for pair in self.pairs:
            _check_name("pair", pair, PAIRS)
        for task in (*self.train_tasks, *self.eval_tasks):
            _check_name("task", task, TASKS)
        _check_name(
            "gsm_plus_critical_thinking", self.gsm_plus_critical_thinking, ("exclude", "no_number")
        )
        _check_name("kd_mixed_precision", self.kd_mixed_precision, MIXED_PRECISION)
        _check_name("dtype", self.dtype, ("auto", "float32", "bfloat16"))
        _check_name("cpu_kernels", self.cpu_kernels, CPU_KERNELS)
        _check_name("teacher_sft", self.teacher_sft, ("full", "lora"))
        _check_name("kd_optimizer", self.kd_optimizer, KD_OPTIMIZERS)
        self._check_checkpoints()

    def _check_checkpoints(self):
        """Checkpoint overrides name one Hub pair's models: tiny pairs are built here, and with
        several pairs the override would not say whose model it replaces."""
        given = [n for n in CHECKPOINT_FIELDS if getattr(self, n)]
        if not given:
            return
        tiny = [p for p in self.pairs if p.startswith("tiny-")]
        if tiny or len(self.pairs) != 1:
            raise ConfigError(
                f"{', '.join(given)}: a checkpoint override names the models of one Hub pair, but "
                f"this profile has pairs {', '.join(self.pairs)}; choose one Hub pair, e.g. --set "
                "pairs=qwen-small"
            )

    def _check_grids(self):
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds = {self.seeds!r}: give one or more integers >= 0")
        for name, values, valid in (
            ("figure_pairs", self.figure_pairs, self.pairs),
            ("figure_tasks", self.figure_tasks, self.train_tasks),
            ("fig3_methods", self.fig3_methods, METHODS),
            ("fig3_divergences", self.fig3_divergences, DIVERGENCES),
        ):
            for value in values:
                _check_name(name[:-1].replace("fig3_", ""), value, valid)
        for k in self.fig6_k:
            _check_range("fig6_k (K)", k, low=0, low_open=True)
        for window in self.fig6_window:
            _check_range("fig6_window (L)", window, low=1)

    def _check_ranges(self):
        for names, bounds in _PROFILE_RANGES:
            for name in names.split():
                _check_range(name, getattr(self, name), **bounds)
        operations = self.student_warmup_operations
        if set(operations) - set("+-*/") or len(set(operations)) != len(operations):
            raise ConfigError(
                f"student_warmup_operations = {operations!r}: use distinct characters of '+-*/', "
                "or '' for every problem"
            )
        if self.kd_batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"kd_batch_size ({self.kd_batch_size}) must be a multiple of grad_accum_steps "
                f"({self.grad_accum_steps})"
            )

    @property
    def offline(self) -> bool:
        """True when every pair is a tiny pair trained here (no Hub access needed)."""
        return all(p.startswith("tiny-") for p in self.pairs)


_TINY = dict(
    pairs=("tiny-qwen", "tiny-llama"),
    train_tasks=("synth_summ", "synth_gsm"),
    eval_tasks=("synth_summ", "synth_gsm", "synth_gsm_plus"),
    max_prompt_tokens_gsm=96,
    max_new_tokens_gsm=64,
    max_prompt_tokens_summ=256,
    max_new_tokens_summ=48,
)

# the cpu profiles' models and runs (what changes a result); docs/calibration.md says how they were
# chosen (a bf16 teacher: its many-token passes are faster on CPUs with bf16 units; the paper's
# teachers run in bf16 too)
_CPU = dict(
    _TINY,
    n_kd=1000,
    max_eval_examples=400,
    train_bf16=True,
    dtype="bfloat16",
    teacher_lr=2e-3,
    teacher_steps=700,
    teacher_steps_summ=400,
    teacher_batch_size=32,
    dropout=0.0,
    # base student: a warm start that ends just before its phase transition on synth_gsm,
    # so that the KD budget carries it across
    student_warmup_steps=500,
    student_warmup_steps_summ=40,
    student_lr=2e-3,
    kd_lr=2e-3,
    kd_steps=500,
    kd_batch_size=16,
    eval_batch_size=100,
    length_groups=2,  # rows grouped by length: less padding computed on CPU (docs/performance.md)
    eval_subset=100,
    val_loss_examples=128,
)

# the figure grids shrunk to fit a CPU budget (Figure 3: AdaSwitch and its on-policy base under
# the two ends of the JSD family; Figure 6: three K and three L)
_CPU_FIGURES = dict(
    figure_pairs=("tiny-qwen",),
    figure_tasks=("synth_gsm",),
    fig3_methods=("on_policy", "adaswitch"),
    fig3_divergences=("forward_kl", "reverse_kl"),
    fig6_k=(1.0, 3.0, 5.0),
    fig6_window=(5, 10, 20),
)

_PROFILES = {
    # seconds per run: tests and CI; models are tiny and barely trained
    "smoke": dict(
        _TINY,
        name="smoke",
        n_kd=32,
        max_eval_examples=16,
        teacher_shape=TinyShape(2, 64, 4, 2, 128),
        student_shape=TinyShape(1, 32, 2, 1, 64),
        synth=SynthConfig(
            n_train_gsm=400,
            n_val_gsm=40,
            n_test_gsm=40,
            n_train_summ=400,
            n_val_summ=40,
            n_test_summ=20,
        ),
        teacher_lr=3e-3,
        teacher_steps=30,
        teacher_batch_size=16,
        dropout=0.0,
        student_warmup_steps=5,
        student_lr=3e-3,
        kd_lr=1e-3,
        kd_steps=4,
        kd_batch_size=8,
        length_groups=2,
        eval_batch_size=16,
        log_every=2,
        eval_every_early=2,
        eval_early_steps=4,
        eval_every=4,
        eval_subset=8,
        val_loss_examples=16,
        figure_pairs=("tiny-qwen",),
        figure_tasks=("synth_gsm",),
        fig3_methods=("on_policy", "adaswitch"),
        fig3_divergences=("forward_kl", "reverse_kl"),
        fig6_k=(1.0, 3.0),
        fig6_window=(5, 10),
    ),
    # the embedded default: both tiny pairs on the twins, on a laptop CPU, no network
    "cpu": dict(_CPU, **_CPU_FIGURES, name="cpu", seeds=(0,)),
    # the paper's claims with paired seeds: the tiny pairs in a regime where a run's end means
    # something (docs/calibration.md): fp32 preparation (the same under oneDNN's kernel caps),
    # teachers trained past their transition, synth_gsm base students converged on the problems
    # that only add (a plateau another CPU does not move; KD teaches the other operations), three
    # times the KD steps at about a third of the rate, a gentler warm-up, curves on 200 questions
    "cpu-claims": dict(
        _CPU,
        name="cpu-claims",
        train_bf16=False,
        teacher_steps=1200,
        teacher_steps_summ=800,
        student_warmup_operations="+",
        student_warmup_steps=1000,
        eval_subset=200,
        kd_lr=7e-4,
        kd_steps=1500,
        kd_warmup_ratio=0.3,
        seeds=(0, 1, 2),
        unclaimed_seed_count=1,
        **_CPU_FIGURES,
    ),
    # the cpu profile's models and runs (the prepared pairs are shared) with every grid of the paper
    # in full and 3 seeds: hours on 2 cores
    "cpu-full": dict(
        _CPU,
        name="cpu-full",
        seeds=(0, 1, 2),
        figure_pairs=(),
        figure_tasks=(),
        fig3_methods=("off_policy", "on_policy", "imitkd", "skd", "adaswitch"),
        fig3_divergences=("forward_kl", "jsd", "reverse_kl"),
        fig6_k=(1.0, 2.0, 3.0, 4.0, 5.0),
        fig6_window=(5, 10, 15, 20),
    ),
    # one Colab GPU, one session: Table 1's Qwen GSM8K and GSM-Plus columns and Table 2 (about
    # 4 h on an L4 by runtime.py's roofline; --set train_tasks=dialogsum,gsm8k adds DialogSum)
    "colab": dict(
        name="colab",
        pairs=("qwen-small",),
        train_tasks=("gsm8k",),
        eval_tasks=("gsm8k", "gsm_plus"),
        instruct=True,
        n_kd=1000,
        max_eval_examples=500,
        kd_epochs=1.0,
        kd_batch_size=4,
        gradient_checkpointing=True,
        # full fine-tuning of the 1.5B teacher needs ~23 GiB of states alone (plan --memory): LoRA,
        # at a learning rate usual for adapters (the paper's 1e-5 is for full fine-tuning)
        teacher_sft="lora",
        teacher_lr=2e-4,
    ),
    # the paper's setting: one 80 GB GPU or more via `accelerate launch`
    "paper": dict(name="paper", gradient_checkpointing=True),
}


def get_profile(name: str, **overrides) -> Profile:
    """A named profile, with optional field overrides (validated like any profile). Lists and
    dicts are accepted for tuple and nested fields, as they arrive from JSON or a notebook's
    parameters."""
    _check_name("profile", name, PROFILES)
    defaults = {f.name: f.default for f in dataclasses.fields(Profile)}
    for key in overrides:
        if key not in defaults:
            raise ConfigError(
                f"unknown profile field {key!r}; valid fields: {', '.join(sorted(defaults))}"
            )
    named = {**defaults, **_PROFILES[name]}
    typed = {key: _typed_like(named[key], value) for key, value in overrides.items()}
    return Profile(**{**_PROFILES[name], **typed})


def _typed_like(base, value):
    """An override as its field's type; a dict for a nested config changes only the fields it names
    of the profile's own (`synth={"summ_rejections": 3}` keeps the profile's split sizes)."""
    if isinstance(base, tuple) and isinstance(value, list):
        return tuple(value)
    if dataclasses.is_dataclass(base) and isinstance(value, dict):
        return dataclasses.replace(base, **value)
    return value


def as_profile(profile: str | Profile) -> Profile:
    """A Profile given itself or its name."""
    return profile if isinstance(profile, Profile) else get_profile(profile)


def profile_overrides(profile: Profile) -> dict:
    """The fields in which `profile` differs from the named profile it is based on, as JSON values:
    `get_profile(profile.name, **profile_overrides(profile)) == profile`."""
    named = get_profile(profile.name)
    return {
        f.name: plain(getattr(profile, f.name))
        for f in dataclasses.fields(Profile)
        if getattr(profile, f.name) != getattr(named, f.name)
    }


def _parse_value(name: str, default, text: str):
    """One `--set` value, typed like the field's default; tuples as comma-separated items."""
    if isinstance(default, tuple):
        kind = type(default[0]) if default else str
        return tuple(_parse_value(name, kind(), item.strip()) for item in text.split(",") if item)
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError
        return text.lower() in ("true", "1")
    if isinstance(default, (int, float, str)):
        return type(default)(text)
    if isinstance(default, TinyShape):  # layers,hidden,heads,kv_heads,intermediate
        sizes = [int(item) for item in text.split(",")]
        if len(sizes) != len(dataclasses.fields(TinyShape)):
            raise ValueError
        return TinyShape(*sizes)
    raise ConfigError(
        f"--set {name}: a {type(default).__name__} field cannot be set from the command line"
    )


def parse_overrides(items) -> dict:
    """`FIELD=VALUE` strings (the command line's `--set`) -> typed profile overrides: int, float,
    bool or str like the field's default, tuples as comma-separated items (`pairs=qwen-small`),
    a tiny model's shape as layers,hidden,heads,kv_heads,intermediate
    (`student_shape=1,128,4,2,512`), a field of the twins' config as `synth.FIELD=VALUE`."""
    defaults = {f.name: f.default for f in dataclasses.fields(Profile)}
    synth_defaults = {f.name: f.default for f in dataclasses.fields(SynthConfig)}
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        field_name = name.removeprefix("synth.")
        # where the value goes and what it is typed like: the twins' config, or the profile
        if field_name != name:
            into, known = out.setdefault("synth", {}), synth_defaults
        else:
            into, known = out, {k: v for k, v in defaults.items() if k != "synth"}
        if not sep or field_name not in known:
            raise ConfigError(
                f"--set {item!r}: use FIELD=VALUE with a profile field or synth.FIELD=VALUE with "
                f"a field of the twins; valid fields: {', '.join(sorted(defaults))}; synth. "
                f"fields: {', '.join(sorted(synth_defaults))}"
            )
        try:
            into[field_name] = _parse_value(name, known[field_name], text)
        except ConfigError:
            raise
        except ValueError:
            kind = type(known[field_name]).__name__
            raise ConfigError(f"--set {item!r}: {name} takes a value of type {kind}") from None
    return out


def model_and_data_overrides(
    teacher: str = "", student: str = "", revision: str = "", data_dir: str = ""
) -> dict:
    """The command lines' `--teacher`, `--student`, `--revision` (pins both models) and
    `--data-dir` as profile overrides; a path that exists is made absolute, so that notebooks
    working in the kit's folder find it."""

    def located(name: str) -> str:
        return str(Path(name).resolve()) if name and Path(name).exists() else name

    given = dict(
        teacher_model=located(teacher),
        student_model=located(student),
        teacher_revision=revision,
        student_revision=revision,
        data_dir=located(data_dir),
    )
    return {name: value for name, value in given.items() if value}


def add_profile_options(parser, default: str = "cpu") -> None:
    """The command lines' profile options: `--profile`, `--set FIELD=VALUE` and the model and data
    options of a Hub pair (`--teacher`, `--student`, `--revision`, `--data-dir`)."""
    parser.add_argument(
        "--profile", default=default, help=f"default: {default}; one of: {', '.join(PROFILES)}"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a profile field (repeatable), e.g. --set kd_steps=50 --set pairs=qwen",
    )
    for flag, text in (
        ("--teacher", "the teacher: a Hub id or a local model folder (default: the pair's own)"),
        ("--student", "the base student and its tokenizer: a Hub id or a local model folder"),
        ("--revision", "a Hub branch, tag or commit, pinned for both models"),
        ("--data-dir", "a folder of local copies of the Hub tasks' files (data.LOCAL_FILES)"),
    ):
        parser.add_argument(flag, default="", help=text)


def profile_overrides_from_args(args) -> dict:
    """The profile overrides `add_profile_options` parsed (the model options win over `--set`)."""
    return {
        **parse_overrides(args.set),
        **model_and_data_overrides(args.teacher, args.student, args.revision, args.data_dir),
    }


@dataclass(frozen=True)
class RunConfig:
    """One distillation run: a cell of Table 1 (or a point of a figure)."""

    profile: Profile
    pair: str = _field("tiny-qwen", "teacher -> student pair")
    task: str = _field("synth_gsm", "training task; GSM-Plus is evaluated with the GSM student")
    method: str = _field("adaswitch", "how targets are made and scored (methods.py)")
    seed: int = _field(0, "data order, sampling draws and ImitKD's coins")
    divergence: str = _field("forward_kl", "D in the loss and in the switch rule (paper: KL)")
    jsd_beta: float = _field(0.5, 'mixture weight for divergence="jsd" (TRL convention)')
    skew_alpha: float = _field(0.1, "for skew_kl / skew_reverse_kl (DistiLLM default)")
    loss_reduction: str = _field(
        "sequence", '"sequence": token mean per sequence, then batch mean (Eq. 2); "token"'
    )
    adaswitch_k: float = _field(3.0, "switch when d_i > K * mean of the previous L divergences")
    adaswitch_window: int = _field(10, "L: window length, also the minimum exploration length")
    adaswitch_floor: float = _field(
        0.0, "optional absolute floor on the threshold; 0 = the paper's rule"
    )
    skd_rule: str = _field(
        "top_k", "accept a student token inside the teacher's top-k or top-p set"
    )
    skd_top_k: int = _field(25, "SKD paper default")
    skd_top_p: float = _field(0.5, 'AdaSwitch\'s "K_skd = 0.5" read as a nucleus')
    imitkd_beta_start: float = _field(
        1.0, "ImitKD: probability of ground truth, decays linearly to 0"
    )
    teacher_continuation: str = _field(
        "exact",
        "AdaSwitch after the switch: teacher token by token, or speculative (same distribution), "
        "or auto: whichever samples the first step faster (the choice is in the record)",
    )
    results_dir: str = _field(
        "results", "records go to <results_dir>/<profile>/runs/<run_id>/", affects_result=False
    )

    def __post_init__(self):
        if not isinstance(self.profile, Profile):
            raise ConfigError("RunConfig.profile must be a Profile (use get_profile(name))")
        _check_name("pair", self.pair, PAIRS)
        _check_name("task", self.task, TASKS)
        _check_name("method", self.method, METHODS)
        _check_name("divergence", self.divergence, DIVERGENCES)
        _check_name("skd_rule", self.skd_rule, SKD_RULES)
        _check_name("teacher_continuation", self.teacher_continuation, RUN_CONTINUATIONS)
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
        return {
            f.name: plain(getattr(obj, f.name), result_only)
            for f in dataclasses.fields(obj)
            if not (result_only and _left_out(f, getattr(obj, f.name)))
        }
    if isinstance(obj, (tuple, list)):
        return [plain(v, result_only) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return str(obj)
    return obj


def _left_out(f: dataclasses.Field, value) -> bool:
    """Whether a field stays out of run ids and cache keys (see `_field`)."""
    if f.metadata.get("affects_result", True) is False:
        return True
    return bool(f.metadata.get("omit_default")) and value == f.default


def config_hash(obj, length: int = 12) -> str:
    """Stable hex digest of a config dataclass: same fields, same hash, on any machine."""
    return _digest(plain(obj, result_only=True), length)


def _digest(fields: dict, length: int = 12) -> str:
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# twins' fields that only the summarisation twin reads: a GSM run's id and prepared pair leave them
# out, so that making synth_summ harder redoes no GSM run
SUMM_ONLY_SYNTH_FIELDS = ("summ_rejections",)
SUMM_TASKS = ("dialogsum", "synth_summ")


def synth_for_task(synth: SynthConfig, task: str) -> dict:
    """The twins' result-changing fields that a run or preparation on `task` depends on."""
    fields = plain(synth, result_only=True)
    if task not in SUMM_TASKS:
        for name in SUMM_ONLY_SYNTH_FIELDS:
            fields.pop(name, None)
    return fields


def run_id(run: RunConfig) -> str:
    """Readable and unique: `<pair>-<task>-<method>-s<seed>-<hash of every result-changing
    field>` (less the twins' fields that only another task reads)."""
    fields = plain(run, result_only=True)
    fields["profile"]["synth"] = synth_for_task(run.profile.synth, run.task)
    return f"{run.pair}-{run.task}-{run.method}-s{run.seed}-{_digest(fields)}"


def baseline_id(profile: Profile, pair: str, task: str, who: str) -> str:
    """The record id of Table 1's Teacher or Student row (`who`) of a pair on a task."""
    return f"{pair}-{task}-{who}-{config_hash(profile)}"


def field_help(cls) -> dict[str, str]:
    """Each field's help text, from its metadata."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def flat_fields(obj, prefix: str = "") -> dict:
    """Every field of a (nested) config as `name: value` with nested fields flattened
    (`synth.max_operand`) and shapes written compactly (`4x256 h4 kv2 ff1024`)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, TinyShape):
            out[prefix + f.name] = (
                f"{value.layers}x{value.hidden} h{value.heads} kv{value.kv_heads} "
                f"ff{value.intermediate}"
            )
        elif dataclasses.is_dataclass(value):
            out.update(flat_fields(value, f"{prefix}{f.name}."))
        elif isinstance(value, tuple):
            out[prefix + f.name] = ",".join(map(str, value))
        else:
            out[prefix + f.name] = value
    return out


def flat_help(cls, prefix: str = "") -> dict[str, str]:
    """Every field's help, nested fields flattened as in `flat_fields` (shapes stay one field)."""
    out = {}
    for f in dataclasses.fields(cls):
        nested = f.type if isinstance(f.type, type) else globals().get(str(f.type))
        if dataclasses.is_dataclass(nested) and nested is not TinyShape:
            out.update(flat_help(nested, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f.metadata.get("help", "")
    return out


if __name__ == "__main__":
    import textwrap

    import pandas as pd

    table = pd.DataFrame({name: flat_fields(get_profile(name)) for name in PROFILES})
    with pd.option_context(
        "display.max_rows", None, "display.width", 200, "display.max_colwidth", 40
    ):
        print(table.to_string(line_width=160))  # wraps the profiles into blocks a screen wide
    print("\nFields:")
    for name, text in flat_help(Profile).items():
        print(textwrap.fill(text, 150, initial_indent=f"{name:<28}", subsequent_indent=" " * 28))
