"""Files: atomic writes, and content hashes that name weights and edit files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor


def state_fingerprint(state: Mapping[str, Tensor]) -> str:
    """sha256 over every tensor of a state dict (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def writable_dir(path: str | Path) -> Path:
    """Create folder `path` if needed and make sure files can be written there, before any long work.

    Raises NotADirectoryError (a file stands on the path) or PermissionError, naming the folder.
    """
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(f"cannot use {path} as output folder: {blocker} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(f"cannot create output folder {path}: {e.strerror}") from e
    if not os.access(path, os.W_OK):
        raise PermissionError(f"output folder {path} is not writable")
    return path


def check_writable_dir(path: str | Path) -> None:
    """Whether folder `path` is writable, or can be created, without creating anything (the nearest existing
    folder on the path decides): for a check before someone else creates it. Raises as `writable_dir` does."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(f"cannot use {path} as output folder: {blocker} is a file")
    nearest = next(p for p in (path, *path.parents) if p.is_dir())  # "." or "/" at the latest
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {path} is not writable" if nearest == path
                              else f"cannot create output folder {path}: {nearest} is not writable")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write through `write(tmp)` to a temporary file beside `path`, flush it to disk, then rename it into place.

    Why: a crash, a power cut or a full disk never leaves a half-written file under the real name.
    The file gets the mode a plain write would give it (an existing file's mode is kept). Raises a
    PermissionError / FileNotFoundError naming the folder when it cannot be written.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write {path}: folder {folder} is not writable")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    # the temporary name keeps the suffix: writers (images, torch) read the format from it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (names an edit file inside a stack)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
