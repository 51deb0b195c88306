"""Peak memory of the distillation loss, chunked against unchunked, side by side in one run:
Qwen2.5's vocabulary (151,936) at batch 4 x 512 response positions, forward + backward, fp32 logits.

    python benchmarks/bench_loss.py                  # each variant in its own process; prints peak RSS

The logits themselves (student, its gradient, teacher) take 3 x 1.2 GB whatever the loss does; the
question is what the loss adds on top.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time


def child(chunk: str) -> None:
    import torch
    from adaswitch_lib.losses import distill_loss
    torch.set_num_threads(2)
    batch, positions, vocab = 4, 512, 151936
    student = torch.randn(batch, positions, vocab, requires_grad=True)
    teacher = torch.randn(batch, positions, vocab)
    mask = torch.ones(batch, positions)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loss = distill_loss(student, teacher, mask, "forward_kl", chunk_size=None if chunk == "none" else int(chunk))
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{base / 2**20:.2f} {peak / 2**20:.2f} {time.perf_counter() - start:.1f} {loss.item():.4f}")


def main() -> None:
    print("| loss | RSS before the loss (logits) | peak RSS | added by the loss | time (fwd+bwd) |")
    print("|---|---|---|---|---|")
    for chunk in ("none", "128", "32"):
        out = subprocess.run([sys.executable, __file__, chunk], capture_output=True, text=True, check=True).stdout.split()
        base, peak, seconds = float(out[0]), float(out[1]), float(out[2])
        label = "unchunked" if chunk == "none" else f"chunked, {chunk} positions"
        print(f"| {label} | {base:.1f} GB | {peak:.1f} GB | {peak - base:.1f} GB | {seconds:.0f} s |")


if __name__ == "__main__":
    child(sys.argv[1]) if len(sys.argv) > 1 else main()
