"""Which CPU kernels the math libraries run: a profile's `cpu_kernels`.

"native" leaves each library its own choice for the CPU at hand, so fp32 results differ in their
last bits between CPUs: PyTorch's vectorised kernels, MKL's matrix products and oneDNN's each
take the widest instructions the CPU has (AVX2, AVX-512, AMX), and each width sums in another
order. "avx2" pins all three to AVX2, which the x86 CPUs of the last decade share, Intel and AMD
alike, meant to give the same fp32 bits on all of them at one thread count. So far it is shown on
one AVX2 host only (docs/reproducibility.md says what an AVX512 host must confirm).

The libraries read their settings once, when they first run, so the settings travel in the
environment of a new process: `./run_all.sh` puts them into every job's, and the command line
starts itself again with them (`python -m adaswitch_lib prepare --profile cpu-claims ...`).

    python -m adaswitch_lib.kernels        # what this process runs
"""

from __future__ import annotations

import os

import torch

from adaswitch_lib.config import CPU_KERNELS
from adaswitch_lib.errors import KitError

# PyTorch's own kernels; MKL's reproducible mode at AVX2, STRICT to drop its dependence on memory
# alignment; oneDNN's kernels
PINNED = {  # every name of CPU_KERNELS but "native"
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2,STRICT",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }
}


def environment(cpu_kernels: str) -> dict[str, str]:
    """The environment variables that make a new process run `cpu_kernels`."""
    if cpu_kernels not in CPU_KERNELS:
        raise KitError(f"cpu_kernels={cpu_kernels!r}; valid names: {', '.join(CPU_KERNELS)}")
    return dict(PINNED.get(cpu_kernels, {}))


def missing(cpu_kernels: str, env=None) -> dict[str, str]:
    """The variables of `cpu_kernels` that `env` (default: this process's) does not hold yet."""
    env = os.environ if env is None else env
    return {k: v for k, v in environment(cpu_kernels).items() if env.get(k) != v}


def check(cpu_kernels: str, device: str = "cpu") -> None:
    """A one-line KitError when this process does not run the kernels its profile asks for (a GPU
    run is not concerned: its CPU does no training arithmetic)."""
    if device != "cpu" or cpu_kernels == "native":
        return
    unset = missing(cpu_kernels)
    if unset:
        settings = " ".join(f"{k}={v}" for k, v in unset.items())
        raise KitError(
            f"cpu_kernels={cpu_kernels} needs {settings} in the environment before Python "
            "starts; run through ./run_all.sh or `python -m adaswitch_lib`, or export them"
        )
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != cpu_kernels.upper():
        raise KitError(
            f"cpu_kernels={cpu_kernels}, but PyTorch runs {capability} kernels: this CPU lacks "
            f"{cpu_kernels.upper()}; use --set cpu_kernels=native (its results will differ in "
            "the last bits from those of other CPUs)"
        )


def in_use() -> dict:
    """What a record says of the kernels that made it."""
    names = sorted({k for settings in PINNED.values() for k in settings})
    return dict(
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        **{name: os.environ.get(name) for name in names},
    )


if __name__ == "__main__":
    print(in_use())
