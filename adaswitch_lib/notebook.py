"""What every notebook does first: work in the kit's folder, and keep the libraries quiet when
papermill or run_all runs it.

    from adaswitch_lib.notebook import setup
    setup(show_progress)     # the notebook's first code cell after its parameters
"""

from __future__ import annotations

import os
from pathlib import Path


def setup(show_progress: bool = True) -> Path:
    """Change to the kit's folder (so `results/` and `.cache/` mean the same folders wherever
    Jupyter started) and, unless `show_progress`, silence the libraries' progress bars. Returns
    the folder."""
    root = project_root()
    os.chdir(root)
    if not show_progress:
        quiet_libraries()
    return root


def project_root(start: Path | None = None) -> Path:
    """The kit's folder (the one holding `adaswitch_lib/` and `notebooks/`) at or above `start`
    (default: the working directory), else `start` itself. Notebooks change to it so that
    `results/` and `.cache/` mean the same folders whether Jupyter started in `notebooks/`, in the
    kit's root, or papermill runs them."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "adaswitch_lib").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def quiet_libraries() -> None:
    """Silence transformers' and datasets' progress bars and advisory warnings: under papermill
    and run_all they drown the kit's own progress lines."""
    import warnings

    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    warnings.filterwarnings(
        "ignore", category=UserWarning, module="(transformers|accelerate|torch)"
    )
