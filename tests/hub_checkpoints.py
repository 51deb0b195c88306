"""Stand-ins for the paper's Hub checkpoints, built offline: the real Qwen2.5 / Llama-3.2 tokenizers
(kept outside the repository) around random 2-layer models with the real vocabulary sizes, tied
embeddings, the real special ids and the generation configs' EOS lists. Saved as local folders,
they take the same path as a downloaded checkpoint; and `hub_cache` files them in a Hugging Face
cache so that their Hub ids load under HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# family -> (tokenizer folder stem, embedding rows, generation EOS ids per variant)
FAMILIES = {
    "qwen": ("qwen2.5", 151936, {"base": [151643], "instruct": [151645, 151643]}),
    "llama": (
        "llama-3.2",
        128256,
        {"base": [128001], "instruct": [128001, 128008, 128009]},
    ),
}


def tokenizer_folder(shared_data: Path, family: str, variant: str) -> Path:
    return shared_data / "tokenizers" / f"{FAMILIES[family][0]}-{variant}"


def make_checkpoint(
    shared_data: Path, folder: Path, family: str, variant: str, hidden: int, seed: int
) -> Path:
    """A random model of the family's real vocabulary with the real tokenizer, saved as a Hub
    checkpoint folder."""
    from transformers import AutoTokenizer, GenerationConfig

    from adaswitch_lib.models import Shape, random_model

    _, vocab, eos = FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(shared_data, family, variant))
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos[variant][-1]
    model = random_model(
        Shape(2, hidden, 4, 2, 2 * hidden, vocab),
        family,
        seed,
        max_position_embeddings=2048,
        bos_token_id=bos,
        eos_token_id=eos[variant][0] if len(eos[variant]) == 1 else eos[variant],
    )
    model.generation_config = GenerationConfig(
        bos_token_id=bos,
        eos_token_id=eos[variant],
        pad_token_id=tokenizer.pad_token_id,
        # shipped sampling settings that greedy evaluation must ignore, as real checkpoints have
        do_sample=True,
        temperature=0.7,
        repetition_penalty=1.05,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def hub_cache(cache: Path, repo_id: str, checkpoint: Path, commit: str = "0" * 40) -> Path:
    """File a checkpoint folder in a Hugging Face cache as `repo_id` at `commit` (refs/main points
    there), the layout `huggingface_hub` reads under HF_HUB_OFFLINE=1."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def local_data_dir(shared_data: Path, folder: Path) -> Path:
    """A `--data-dir` of the real files: GSM8K train/test, GSM-Plus testmini, DialogSum dev/test
    (DialogSum's dev file also stands in for its train split, which the shared data lacks)."""
    links = {
        "gsm8k/train.jsonl": "gsm8k/train.jsonl",
        "gsm8k/test.jsonl": "gsm8k/test.jsonl",
        "gsm-plus/gsmplus_testmini.jsonl": "gsm-plus/gsmplus_testmini.jsonl",
        "dialogsum/dialogsum.train.jsonl": "dialogsum/dialogsum.dev.jsonl",
        "dialogsum/dialogsum.dev.jsonl": "dialogsum/dialogsum.dev.jsonl",
        "dialogsum/dialogsum.test.jsonl": "dialogsum/dialogsum.test.jsonl",
    }
    for name, source in links.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(shared_data / source, folder / name)
    return folder


# a few examples and steps of everything: SFT, every method, evaluation on GSM8K and GSM-Plus
TINY_BUDGET = [
    "train_tasks=gsm8k",
    "eval_tasks=gsm8k,gsm_plus",
    "n_kd=8",
    "max_eval_examples=3",
    "sft_val_examples=8",
    "teacher_steps=2",
    "teacher_batch_size=4",
    "kd_steps=2",
    "kd_batch_size=4",
    "eval_batch_size=4",
    "eval_every_early=1",
    "eval_early_steps=1",
    "eval_every=2",
    "eval_subset=2",
    "val_loss_examples=4",
    "max_new_tokens_gsm=12",
    "log_every=1",
]
