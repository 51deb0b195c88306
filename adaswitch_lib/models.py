"""Teacher-student pairs: Hub checkpoints for the paper and Colab, tiny Qwen2/Llama pairs for CPU.

Tiny pairs use a byte-level BPE tokenizer trained with `tokenizers` on the task's text and are
saved with `save_pretrained`, so tiny and Hub models load through the same `AutoTokenizer` /
`AutoModelForCausalLM` path from a folder.

    python -m adaswitch_lib.models qwen       # print the Hub ids of a pair
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from adaswitch_lib.config import PAIRS, Profile, TinyShape, _check_name
from adaswitch_lib.errors import ConfigError, DataUnavailableError, hub_unreachable

# teacher, student. The paper prints "Llama-3.1-3B/1B"; the public 1B/3B Llama models are 3.2.
HUB_PAIRS = {
    "qwen": ("Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-0.5B"),
    "llama": ("meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-1B"),
    "qwen-small": ("Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-0.5B"),
}
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>"]
# bump when train_tokenizer changes: it is part of the prepared-models cache key
TOKENIZER_VERSION = 3


def hub_ids(pair: str, instruct: bool = False) -> tuple[str, str]:
    """(teacher id, student id) of a Hub pair; `instruct` picks the -Instruct checkpoints."""
    _check_name("pair", pair, PAIRS)
    if pair not in HUB_PAIRS:
        raise ValueError(f"{pair} is a tiny pair trained here; it has no Hub ids")
    return tuple(f"{name}-Instruct" if instruct else name for name in HUB_PAIRS[pair])


@dataclass(frozen=True)
class Checkpoint:
    """A model to load: a Hub id or a local folder, and a pinned revision (None = the newest)."""

    name_or_path: str
    revision: str | None = None


def pair_checkpoints(profile: Profile, pair: str) -> tuple[Checkpoint, Checkpoint]:
    """(teacher, student) of a Hub pair under the profile: its own Hub ids (-Instruct when the
    profile says so), or the profile's `teacher_model` / `student_model`, at their revisions."""
    teacher, student = hub_ids(pair, profile.instruct)
    return (
        Checkpoint(profile.teacher_model or teacher, profile.teacher_revision or None),
        Checkpoint(profile.student_model or student, profile.student_revision or None),
    )


@dataclass(frozen=True)
class Shape:
    """What memory depends on in a Qwen2/Llama checkpoint (its config.json)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.hidden // self.heads

    @property
    def parameters(self) -> int:
        """Tied input and output embeddings (all five published models tie them)."""
        h, per_layer = self.hidden, 0
        per_layer += h * (2 * h + 2 * self.kv_width) + 3 * h * self.intermediate + 2 * h
        return self.vocab * h + self.layers * per_layer + h


# the published configs (base and -Instruct share their shapes)
PUBLISHED = {
    "Qwen/Qwen2.5-0.5B": Shape(24, 896, 14, 2, 4864, 151936),
    "Qwen/Qwen2.5-1.5B": Shape(28, 1536, 12, 2, 8960, 151936),
    "Qwen/Qwen2.5-3B": Shape(36, 2048, 16, 2, 11008, 151936),
    "meta-llama/Llama-3.2-1B": Shape(16, 2048, 32, 8, 8192, 128256),
    "meta-llama/Llama-3.2-3B": Shape(28, 3072, 24, 8, 8192, 128256),
}


def shape_of(name_or_path: str) -> Shape:
    """A published model's shape, or a local folder's from its config.json."""
    published = PUBLISHED.get(name_or_path.removesuffix("-Instruct"))
    if published is not None:
        return published
    config_file = Path(name_or_path) / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"no shape known for {name_or_path}: give a local folder with a config.json or one of "
            f"{', '.join(PUBLISHED)}"
        )
    c = json.loads(config_file.read_text())
    return Shape(
        c["num_hidden_layers"],
        c["hidden_size"],
        c["num_attention_heads"],
        c.get("num_key_value_heads", c["num_attention_heads"]),
        c["intermediate_size"],
        c["vocab_size"],
    )


def pair_shapes(profile: Profile, pair: str) -> tuple[Shape, Shape]:
    """(teacher, student) shapes of a Hub pair under the profile (see `pair_checkpoints`)."""
    return tuple(shape_of(c.name_or_path) for c in pair_checkpoints(profile, pair))


def random_model(shape: Shape, family: str = "qwen", seed: int = 0, **config):
    """A random-init Qwen2 or Llama causal LM of a shape (tied embeddings), for measurements and
    tests without weights; `config` adds config fields (special ids, attention, context)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    Config, Model = {
        "qwen": (Qwen2Config, Qwen2ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[family]
    torch.manual_seed(seed)
    return Model(
        Config(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            intermediate_size=shape.intermediate,
            tie_word_embeddings=True,
            **config,
        )
    )


def device_and_dtype(
    dtype: str = "auto", device: str | None = None, bf16_supported: bool | None = None
) -> tuple[torch.device, torch.dtype]:
    """bf16 on a CUDA GPU that has it, fp32 elsewhere (CPU, or a GPU without bf16 such as Colab's
    T4: fp16 weights overflow in some Hub models, and the T4's 15 GB hold a 1.5B teacher in fp32);
    the device from the caller or automatic. `bf16_supported` fakes the GPU's answer in tests."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype == "auto":
        if device.type != "cuda":
            return device, torch.float32
        bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
        return device, torch.bfloat16 if bf16 else torch.float32
    return device, getattr(torch, dtype)


def stop_token_ids(tokenizer, *models) -> int | tuple[int, ...]:
    """Every id that ends a response: the tokenizer's EOS and each model's generation-config EOS
    ids (Qwen2.5-Instruct ends a turn with <|im_end|>, its base text with <|endoftext|>). One id
    stays an int."""
    ids = {tokenizer.eos_token_id}
    for model in models:
        shipped = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids |= set([shipped] if isinstance(shipped, int) else shipped or [])
    ids.discard(None)
    ordered = tuple(sorted(ids))
    return ordered[0] if len(ordered) == 1 else ordered


def training_autocast(device, train_bf16: bool = False, bf16_supported: bool | None = None):
    """The autocast dtype a fine-tuning step runs its forward in, over fp32 master weights: bf16 on
    CUDA GPUs that have it, fp16 (with a gradient scaler) on those that do not (Colab's T4), bf16 on
    CPU when `train_bf16` asks for it, else None (plain fp32). `bf16_supported` fakes the GPU's
    answer in tests."""
    if torch.device(device).type == "cuda":
        bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
        return torch.bfloat16 if bf16 else torch.float16
    return torch.bfloat16 if train_bf16 else None


def gradient_checkpointing(model, on: bool) -> None:
    """Turn gradient checkpointing on or off. It acts in training mode only, so the samplers and
    `generate` (eval mode) keep their KV cache; non-reentrant checkpointing replays dropout's
    random draws, so the gradients are those of a plain backward pass."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif model.is_activation_checkpointing:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif model.is_gradient_checkpointing:
        model.gradient_checkpointing_disable()


def lora_adapters(model, rank: int, dropout: float = 0.0):
    """`model` with LoRA adapters (rank r, alpha 2r) on every linear layer but the output head,
    through peft; only the adapters train. `merge_and_unload()` folds them back into the weights."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_model(
    name_or_path: str,
    dtype: str = "auto",
    device: str | None = None,
    revision: str | None = None,
    dropout: float | None = None,
):
    """A causal LM from a folder or a Hub id (revision pinned if given), in eval mode, with
    transformers' default attention (SDPA). `dropout` sets the attention dropout that fine-tuning
    uses (Qwen2 and Llama have no other dropout)."""
    from transformers import AutoModelForCausalLM

    device, torch_dtype = device_and_dtype(dtype, device)
    _require_reachable(name_or_path)
    extra = {} if dropout is None else dict(attention_dropout=dropout)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, revision=revision, **extra
        )
    except OSError as error:
        raise DataUnavailableError(
            f"cannot load model {name_or_path}: {str(error).splitlines()[0][:160]}"
        ) from None
    return model.to(device).eval()


def load_tokenizer(name_or_path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    _require_reachable(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    if tokenizer.pad_token is None:  # base Qwen/Llama tokenizers: pad with EOS, masked by attention
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _require_reachable(name_or_path: str) -> None:
    if not Path(name_or_path).exists() and hub_unreachable():
        raise DataUnavailableError(
            f"cannot load {name_or_path}: the Hugging Face Hub is unreachable; use a tiny "
            "pair (profiles smoke/cpu), a local model folder, or HF_HUB_OFFLINE=1 with a cached "
            "copy"
        )


# ---------------------------------------------------------------------------- tiny offline pairs
def train_tokenizer(texts, vocab_size: int = 1024):
    """Byte-level BPE trained with `tokenizers`, wrapped in PreTrainedTokenizerFast with
    pad/bos/eos. One digit per pre-token, the space kept with it (' 62' -> ' 6', '2'): a tiny
    teacher learns the arithmetic of synth_gsm far sooner this way than with Qwen2's splitting,
    which puts the space in a token of its own."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r" ?\p{N}| ?[^\s\p{N}]+|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Save a tiny tokenizer in a folder of its own. Beside a model's config.json it would not
    survive loading: transformers 5 loads any folder whose config says qwen2 as Qwen2Tokenizer,
    which installs Qwen2's pre-tokenizer over the saved one (`tokenizer_class` does not stop it)."""
    if (Path(folder) / "config.json").exists():
        raise ValueError(
            f"{folder} holds a model config; save the tiny tokenizer in a folder of its own"
        )
    tokenizer.save_pretrained(folder)


def tiny_model(
    kind: str, shape: TinyShape, tokenizer, dropout: float = 0.0, context: int = 512, seed: int = 0
):
    """A randomly initialised Qwen2- or Llama-style causal LM for the tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    Config, Model = {
        "tiny-qwen": (Qwen2Config, Qwen2ForCausalLM),
        "tiny-llama": (LlamaConfig, LlamaForCausalLM),
    }[kind]
    config = Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=context,
        attention_dropout=dropout,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return Model(config)


if __name__ == "__main__":
    print(hub_ids(sys.argv[1] if len(sys.argv) > 1 else "qwen"))
