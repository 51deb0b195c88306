"""Atomic writes: a reader sees a whole file or folder, or none at all.

Everything the kit writes that another process may read (prepared pairs, run records, tables,
claims, the manifest) goes through here: the content is written under a temporary name in the
same folder, then renamed into place, so an interrupted run never leaves a half-written result
that could be mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

COMPLETE = "COMPLETE"  # the marker a finished folder holds; loaders check it


def write_text(path: Path, text: str) -> None:
    """`text` to a temporary file beside `path`, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    """`obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2))


def write_folder(folder: Path, write) -> Path:
    """Run `write(tmp_folder)`, mark it complete, then rename it to `folder` (replacing an older
    one): a half-written folder is never at `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        write(tmp)
        (tmp / COMPLETE).write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def is_complete(folder: Path) -> bool:
    """True for a folder `write_folder` finished."""
    return (Path(folder) / COMPLETE).is_file()
