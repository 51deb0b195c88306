"""Peak GPU memory of each phase of a profile, from the models' shapes: does it fit a GPU?

    python -m adaswitch_lib.plan --memory --profile colab --gpu t4
    python -m adaswitch_lib.plan --memory --profile paper            # every GPU of GPUS

Arithmetic, not a measurement: weights, gradients and AdamW states by parameter count; activations
per token and layer as a Qwen2/Llama layer keeps them for its backward pass (the coefficients are
measured: benchmarks/bench_memory.py, docs/gpu.md); logits by the vocabulary. Every row is taken at
the profile's full prompt and response lengths, so real batches, mostly shorter, peak lower. The
CUDA context and the allocator's fragmentation come on top (about 0.5-1 GiB).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from adaswitch_lib.config import Profile
from adaswitch_lib.data import token_limits
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import LOGITS_BUDGET_BYTES, positions_within
from adaswitch_lib.models import Shape, pair_shapes

GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    gib: float  # what torch can allocate, about
    bf16: bool


GPUS = {
    "t4": GPU("T4 16 GB", 14.7, bf16=False),
    "l4": GPU("L4 24 GB", 22.0, bf16=True),
    "a100-40": GPU("A100 40 GB", 39.4, bf16=True),
    "a100-80": GPU("A100 80 GB", 79.1, bf16=True),
    "h100": GPU("H100 80 GB", 79.1, bf16=True),
}


def activation_bytes(shape: Shape, tokens: int, half: bool, checkpointing: bool) -> float:
    """What a training forward over `tokens` keeps for the backward pass. Per token and layer,
    measured: 36 h + 16 I bytes in fp32, 32 h + 8 I under 16-bit autocast (the residual stream and
    the norms stay fp32). Checkpointing keeps each layer's fp32 input, and recomputes one layer's
    activations at a time."""
    h, inter = shape.hidden, shape.intermediate
    per_layer = (32 * h + 8 * inter) if half else (36 * h + 16 * inter)
    if checkpointing:
        return tokens * (4 * h * shape.layers + per_layer)
    return tokens * per_layer * shape.layers


def kv_cache_bytes(shape: Shape, tokens: int, element: int) -> float:
    return 2 * shape.layers * shape.kv_width * tokens * element


def training_states(shape: Shape, optimizer: str = "adamw") -> float:
    """fp32 weights and gradients with AdamW's two moments: fp32 (16 bytes a parameter in all), or
    8-bit (10 bytes)."""
    return shape.parameters * (8 + (2 if optimizer == "adamw_8bit" else 8))


def autocast_copies(shape: Shape, half: bool) -> float:
    """The 16-bit copy of every trained weight that autocast caches through a training forward
    (measured on CPU: with checkpointing or without, the copies live until the forward ends;
    without checkpointing the backward needs them too)."""
    return 2 * shape.parameters if half else 0


def lora_parameters(shape: Shape, rank: int) -> int:
    """Adapters of rank r on q, k, v, o, gate, up and down: r x (inputs + outputs) each."""
    h, kv, inter = shape.hidden, shape.kv_width, shape.intermediate
    return rank * shape.layers * (9 * h + 2 * kv + 3 * inter)


def sft_states(profile: Profile, shape: Shape, half: bool) -> float:
    """The teacher's SFT at the end of its forward: full fine-tuning's `training_states` and
    autocast's copies, or under LoRA frozen fp32 weights (autocast casts those per operation, and
    keeps the casts for backward only without checkpointing) with the adapters' weights,
    gradients and AdamW states."""
    if profile.teacher_sft == "full":
        return training_states(shape) + autocast_copies(shape, half)
    copies = 2 if half and not profile.gradient_checkpointing else 0
    return shape.parameters * (4 + copies) + 16 * lora_parameters(shape, profile.lora_rank)


def update_logits_bytes(positions: int, student: Shape, teacher_bytes: int) -> float:
    """The KD update's logits over `positions` response positions: the teacher's (in its dtype),
    and the student's whole in fp32 with their gradient and the loss's workspace; or, past
    LOGITS_BUDGET_BYTES, the student's made a piece at a time from its hidden states (about eight
    fp32 copies of a piece alive, `losses.update_piece`) with a gradient buffer for the head and a
    16-bit copy of it."""
    vocab = student.vocab
    teacher = positions * vocab * teacher_bytes
    if positions * vocab * 4 <= LOGITS_BUDGET_BYTES:
        return teacher + positions * vocab * (4 + 4 + 8)
    # the pieces' workspace, the head's gradient and its 16-bit copy
    return teacher + LOGITS_BUDGET_BYTES + (4 + 2) * vocab * student.hidden


def phases(profile: Profile, pair: str, task: str, gpu: GPU) -> dict[str, float]:
    """Peak bytes of each phase of a Hub pair on a task (tiny pairs fit anything)."""
    teacher, student = pair_shapes(profile, pair)
    prompt, new = token_limits(profile, task)
    row = prompt + new
    half, checkpointing = True, profile.gradient_checkpointing  # autocast: bf16, or fp16 (T4)
    frozen = 2 if gpu.bf16 and profile.dtype != "float32" else 4  # the KD teacher's bytes a weight
    sft_rows = math.ceil(profile.teacher_batch_size / profile.length_groups)
    kd_rows = profile.kd_batch_size // profile.grad_accum_steps
    update_rows = math.ceil(kd_rows / profile.length_groups)
    # the head's output per response position: 16-bit, its fp32 copy, the softmax, the gradient;
    # SFT runs the head in pieces of positions_within(vocab) positions
    sft_positions = min(sft_rows * new, positions_within(teacher.vocab))
    sft_logits = sft_positions * teacher.vocab * (2 + 4 + 4 + 4)
    kd_resident = frozen * teacher.parameters + training_states(student, profile.kd_optimizer)
    return {
        "teacher SFT": sft_states(profile, teacher, half)  # the base student waits on the CPU
        + activation_bytes(teacher, sft_rows * row, half, checkpointing)
        + sft_logits,
        "pair evaluation (greedy)": 4 * (teacher.parameters + student.parameters)
        + kv_cache_bytes(teacher, profile.eval_batch_size * row, 4)
        + 2 * 4 * profile.eval_batch_size * teacher.vocab,
        "KD sampling": kd_resident
        + kv_cache_bytes(teacher, kd_rows * row, frozen)
        + kv_cache_bytes(student, kd_rows * row, 4)
        + kd_rows * new * teacher.vocab * 4,  # teacher logits a sampler keeps (SKD, AdaSwitch)
        "KD student update": kd_resident
        + autocast_copies(student, half)
        + activation_bytes(student, update_rows * row, half, checkpointing)
        + update_logits_bytes(update_rows * new, student, frozen),
        "KD validation": kd_resident + 3 * LOGITS_BUDGET_BYTES,
        "KD evaluation (greedy)": kd_resident
        + kv_cache_bytes(student, profile.eval_batch_size * row, 4)
        + 2 * 4 * profile.eval_batch_size * student.vocab,
    }


def memory_table(profile: Profile, gpus=None):
    """Peak GiB of every phase of every Hub pair and training task of the profile, per GPU."""
    import pandas as pd

    hub_pairs = [p for p in profile.pairs if not p.startswith("tiny-")]
    if not hub_pairs:
        raise ConfigError(f"profile {profile.name} has only tiny pairs: they fit any GPU")
    rows = []
    for key in gpus or GPUS:
        if key not in GPUS:
            raise ConfigError(f"unknown GPU {key!r}; valid names: {', '.join(GPUS)}")
        gpu = GPUS[key]
        for pair in hub_pairs:
            for task in profile.train_tasks:
                for phase, used in phases(profile, pair, task, gpu).items():
                    rows.append(
                        dict(
                            gpu=gpu.name,
                            pair=pair,
                            task=task,
                            phase=phase,
                            gib=round(used / GIB, 1),
                            fits="yes" if used / GIB <= gpu.gib else "NO",
                        )
                    )
    return pd.DataFrame(rows)


# The maintained routes to less memory, each a profile change with its own run ids (docs/gpu.md)
ROUTES = (
    ("teacher SFT", dict(teacher_sft="lora")),
    ("KD", dict(kd_optimizer="adamw_8bit")),  # pip install bitsandbytes
)


def advice(profile: Profile, gpus=None) -> list[str]:
    """One line per GPU where a phase does not fit, naming the route (`--set ...`) that makes its
    phases fit, if one does."""
    lines = []
    table = memory_table(profile, gpus)
    for gpu, rows in table.groupby("gpu", sort=False):
        too_big = rows[rows["fits"] == "NO"]
        for prefix, change in ROUTES:
            missing = too_big[too_big["phase"].str.startswith(prefix)]
            if missing.empty or all(getattr(profile, k) == v for k, v in change.items()):
                continue
            routed = memory_table(dataclasses.replace(profile, **change), [_key(gpu)])
            routed = routed[routed["phase"].str.startswith(prefix)]
            setting = " ".join(f"--set {k}={v}" for k, v in change.items())
            verdict = "fit" if (routed["fits"] == "yes").all() else "still do not fit"
            lines.append(
                f"{gpu}: with {setting} the {prefix} phases peak at {routed['gib'].max()} GiB and "
                f"{verdict}"
            )
    return lines


def _key(gpu_name: str) -> str:
    return next(key for key, gpu in GPUS.items() if gpu.name == gpu_name)


def this_gpu():
    """The CUDA device torch sees, as a GPU (about 95 % of its memory allocatable), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return GPU(props.name, 0.95 * props.total_memory / GIB, torch.cuda.is_bf16_supported())


def fit_warnings(profile: Profile, pair: str, task: str, gpu: GPU | None) -> list[str]:
    """One line per phase of a Hub pair's run that the estimator says will not fit `gpu`, naming
    the route that would make it fit when one does (tiny pairs and no GPU: none)."""
    if gpu is None or pair.startswith("tiny-"):
        return []
    lines = []
    for phase, used in phases(profile, pair, task, gpu).items():
        if used / GIB <= gpu.gib:
            continue
        line = f"{phase} needs ~{used / GIB:.1f} GiB by the estimator; {gpu.name} has {gpu.gib:.1f}"
        for prefix, change in ROUTES:
            taken = all(getattr(profile, k) == v for k, v in change.items())
            if phase.startswith(prefix) and not taken:
                routed = phases(dataclasses.replace(profile, **change), pair, task, gpu)[phase]
                setting = " ".join(f"--set {k}={v}" for k, v in change.items())
                line += f"; with {setting}: ~{routed / GIB:.1f} GiB"
        lines.append(line)
    return lines
