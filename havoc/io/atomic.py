"""Atomic file writes: write a temporary file beside the target, fsync, then rename over it.

A crash or an exception mid-way leaves the previous file (or no file) in place, never a truncated one,
and removes the temporary.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp (and writers such as safetensors that replace the file) leave 0600: give the result the
        # mode open() would have given it.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_destination(path: str | Path, what: str, *, folder: bool = False) -> Path:
    """Refuse, before any work, a destination that cannot be written: so a long run (an evaluation, a
    training run) does not lose its result at the end.

    The check writes, rather than asking `os.access` (which says yes to root everywhere): a folder is
    created (it was going to be), a file's folder gets a temporary file that is removed at once.

    Args:
        path: the file (or, with `folder`, the folder) to be written.
        what: how to name it in the message (the flag or config key, e.g. "--output").
        folder: `path` is a folder, created here if missing.

    Returns:
        `path` as a Path. Raises ConfigError naming `what` and the reason.
    """
    from havoc.errors import ConfigError

    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what} {path} exists and is not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{what} {path}: cannot create the folder ({e.strerror or e})") from None
        probe = path
    else:
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a folder; name a file")
        probe = path.parent if str(path.parent) else Path(".")
        if not probe.is_dir():
            raise ConfigError(f"{what} {path}: the folder {probe} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".havoc-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"{what} {path}: {probe} is not writable ({e.strerror or e})") from None
    return path
