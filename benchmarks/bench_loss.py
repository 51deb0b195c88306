"""Peak memory of the distillation loss, chunked against unchunked, side by side in one run:
Qwen2.5's vocabulary (151,936) at batch 4 x 512 response positions, forward + backward, fp32 logits.

    python benchmarks/bench_loss.py                  # each variant in its own process; prints peak
    RSS
    python benchmarks/bench_loss.py --device cuda    # peak GPU memory
    (torch.cuda.max_memory_allocated)

The logits themselves (student, its gradient, teacher) take 3 x 1.2 GB whatever the loss does; the
question is what the loss adds on top."""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def child(chunk: str, device: str) -> None:
    import torch

    from adaswitch_lib.losses import distill_loss

    torch.set_num_threads(2)
    batch, positions, vocab = 4, 512, 151936
    torch.manual_seed(0)  # every variant gets the same logits: their loss values must agree
    student = torch.randn(batch, positions, vocab, device=device, requires_grad=True)
    teacher = torch.randn(batch, positions, vocab, device=device)
    mask = torch.ones(batch, positions, device=device)
    cuda = device.startswith("cuda")

    def used() -> float:  # GB: this process's peak RSS on CPU, the allocator's peak on a GPU
        return (
            torch.cuda.max_memory_allocated() / 2**30
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        )

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = used()
    start = time.perf_counter()
    loss = distill_loss(
        student, teacher, mask, "forward_kl", chunk_size=None if chunk == "none" else int(chunk)
    )
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    print(f"{base:.2f} {used():.2f} {time.perf_counter() - start:.2f} {loss.item():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (peak RSS) or cuda (peak GPU memory)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one variant, in its own process
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.device)
    what = "GPU memory" if args.device.startswith("cuda") else "RSS"
    print(
        f"| loss | {what} before the loss (logits) | peak {what} | added by the loss | time "
        "(fwd+bwd) | loss value |"
    )
    print("|---|---|---|---|---|---|")
    for chunk in ("none", "128", "32"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", chunk, "--device", args.device],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        base, peak, seconds, value = float(out[0]), float(out[1]), float(out[2]), out[3]
        label = "unchunked" if chunk == "none" else f"chunked, {chunk} positions"
        print(
            f"| {label} | {base:.1f} GB | {peak:.1f} GB | {peak - base:.1f} GB | {seconds:.1f} s | "
            f"{value} |"
        )


if __name__ == "__main__":
    main()
