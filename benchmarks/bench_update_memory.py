"""The KD student update, whole, at a published shape on CPU: the peak resident memory of one
update (forward, the loss, backward, one AdamW step) against the memory estimator's figure for the
same phase, the frozen teacher's weights left out (the teacher's logits are given, as a sampler
keeps them). Each case runs in a process of its own, since peak resident memory is per process.

    python benchmarks/bench_update_memory.py                         # Qwen2.5-0.5B, colab update
    python benchmarks/bench_update_memory.py --optimizer adamw_8bit  # the T4 route
    python benchmarks/bench_update_memory.py --rows 1 --new 128      # a quick look (~1 min)

A CPU has no CUDA context or caching allocator: what a GPU adds on top (~0.5-1 GiB) is not here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CASE = """
import json, resource, sys, torch
from adaswitch_lib.decoding import Targets
from adaswitch_lib.distill import response_hidden
from adaswitch_lib.losses import distill_loss_from_hidden, position_weights
from adaswitch_lib.models import PUBLISHED, gradient_checkpointing, random_model
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
shape = PUBLISHED[args["model"]]
model = random_model(shape, "qwen", 0).train()
gradient_checkpointing(model, True)
groups = [{"params": list(model.parameters()), "weight_decay": 0.01}]
if args["optimizer"] == "adamw_8bit":
    import bitsandbytes
    optimizer = bitsandbytes.optim.AdamW8bit(groups, lr=1e-5)
else:
    optimizer = torch.optim.AdamW(groups, lr=1e-5)
rows, prompt, new = args["rows"], args["prompt"], args["new"]
g = torch.Generator().manual_seed(0)
targets = Targets(
    sequences=torch.randint(0, shape.vocab, (rows, prompt + new), generator=g),
    attention_mask=torch.ones(rows, prompt + new, dtype=torch.long),
    response_mask=torch.ones(rows, new),
    prompt_length=prompt,
)
teacher_logits = torch.randn(rows, new, shape.vocab, generator=g)
def update():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = response_hidden(model, targets)
        loss = distill_loss_from_hidden(
            hidden, model.get_output_embeddings().weight, teacher_logits,
            position_weights(targets.response_mask))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)  # the gradients stay allocated, as between steps
update()  # the optimiser's states now exist
print(json.dumps(dict(peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
"""

_BASELINE = """
import json, resource, torch
import adaswitch_lib.distill, adaswitch_lib.models
print(json.dumps(dict(peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
"""


def run(code: str, *argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimate(args) -> float:
    """The estimator's KD update, the frozen teacher's weights left out."""
    from adaswitch_lib.memory import (
        activation_bytes,
        autocast_copies,
        training_states,
        update_logits_bytes,
    )
    from adaswitch_lib.models import PUBLISHED

    shape = PUBLISHED[args.model]
    tokens = args.rows * (args.prompt + args.new)
    return (
        training_states(shape, args.optimizer)
        + autocast_copies(shape, True)
        + activation_bytes(shape, tokens, True, True)
        + update_logits_bytes(args.rows * args.new, shape, 4)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw_8bit"))
    parser.add_argument("--rows", type=int, default=4, help="rows of one update (colab: 4)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (colab GSM8K)")
    parser.add_argument("--new", type=int, default=512, help="response tokens (colab GSM8K)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    baseline = run(_BASELINE)["peak"]
    peak = run(_CASE, json.dumps(vars(args)))["peak"]
    gib = 2**30
    measured, estimated = (peak - baseline) / gib, estimate(args) / gib
    print(
        f"{args.model} {args.optimizer} rows {args.rows} x ({args.prompt} + {args.new}) tokens: "
        f"measured {measured:.2f} GiB over the interpreter, estimated {estimated:.2f} GiB, "
        f"ratio {measured / estimated:.2f}"
    )


if __name__ == "__main__":
    main()
