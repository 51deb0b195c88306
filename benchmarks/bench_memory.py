"""The memory estimator's activation term against measurement, at the published layer shapes:
the bytes a training forward keeps for its backward pass (each storage counted once, parameters
left out), per token and layer, from models of 1 and 2 layers at two lengths, so that the
embedding and the per-layer weight copies cancel out. No GPU needed: what is saved for backward
does not depend on the device (SDPA keeps its inputs, output and log-sum-exp on both). Every
shape runs as a Qwen2 layer (Llama's differs by the q/k/v biases only).

    python benchmarks/bench_memory.py                 # Qwen2.5-0.5B / 1.5B / 3B, Llama-3.2-1B / 3B
"""

from __future__ import annotations

import argparse
import dataclasses

import torch


def saved_bytes(model, ids, autocast: bool) -> int:
    """Bytes of the distinct storages the forward saves for backward, parameters left out."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.model(input_ids=ids).last_hidden_state.float().mean().backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def measured_per_token_layer(shape, autocast: bool, checkpointing: bool, rows: int = 2) -> float:
    from adaswitch_lib.models import gradient_checkpointing, random_model

    saved = {}
    for layers in (1, 2):
        for tokens in (64, 128):
            # the embedding is not an activation: a small vocabulary keeps it out of the way
            small = dataclasses.replace(shape, layers=layers, vocab=256)
            model = random_model(small, "qwen", 0, attn_implementation="sdpa").train()
            if checkpointing:
                gradient_checkpointing(model, True)
            ids = torch.randint(0, 256, (rows, tokens))
            saved[layers, tokens] = saved_bytes(model, ids, autocast)
    second_layer = [saved[2, t] - saved[1, t] for t in (64, 128)]
    return (second_layer[1] - second_layer[0]) / (rows * 64)


def main() -> None:
    from adaswitch_lib.memory import activation_bytes
    from adaswitch_lib.models import PUBLISHED

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PUBLISHED))
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"{'model':<26} {'forward':<15} {'measured B':>11} {'estimated B':>12} {'ratio':>6}")
    for name in args.models.split(","):
        shape = PUBLISHED[name]
        for autocast, checkpointing in ((False, False), (True, False), (True, True)):
            measured = measured_per_token_layer(shape, autocast, checkpointing)
            # the estimator's bytes for one more layer, per token
            more = dict(half=autocast, checkpointing=checkpointing)
            one = activation_bytes(dataclasses.replace(shape, layers=1), 1, **more)
            two = activation_bytes(dataclasses.replace(shape, layers=2), 1, **more)
            label = ("bf16 autocast" if autocast else "fp32") + (", ckpt" if checkpointing else "")
            estimate = two - one
            print(
                f"{name:<26} {label:<15} {measured:>11.0f} {estimate:>12.0f} "
                f"{estimate / measured:>6.2f}"
            )


if __name__ == "__main__":
    main()
