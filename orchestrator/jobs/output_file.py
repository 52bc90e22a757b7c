"""Output files (``export``, ``run --export``, ``report``): written beside their target and
renamed into place, so no reader ever sees half a file.

A symlink is followed: its target is replaced and the link stays a link. Only a regular file
(or nothing yet) is replaced: a folder, FIFO, device or socket at the path is refused before
anything is written, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from orchestrator.errors import OutputRefused

T = TypeVar("T")

_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def output_target(path: Path) -> Path:
    """The file that writing ``path`` replaces: ``path`` with every symlink followed.

    Raises ``OutputRefused`` when that is anything but a regular file or nothing yet.
    """
    target = Path(os.path.realpath(path))
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:  # a symlink loop, a folder that may not be searched
        raise OutputRefused(f"{path}: cannot be written: {exc.strerror or exc}") from None
    if stat.S_ISREG(info.st_mode):
        return target
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
    where = f"is {kind}" if target == Path(os.path.abspath(path)) else f"leads to {target}, {kind}"
    raise OutputRefused(f"{path}: {where}; give the path of a file to write")


def write_atomically(path: Path, write: Callable[[TextIO], T]) -> T:
    """Write ``path`` through a new file beside its target, renamed over it when complete.

    The temporary file is unique (two writers never share one), takes the replaced file's
    permissions, and is removed if anything fails. Raises ``OutputRefused`` for a path that
    cannot be written; what ``write`` returns is returned.
    """
    target = output_target(path)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputRefused(
            f"{path}: its folder {folder} cannot be made: {exc.strerror or exc}"
        ) from None
    tmp = folder / f".{target.name[:200]}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise OutputRefused(f"{path}: cannot be written: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputRefused(f"{path}: cannot be written: {exc.strerror or exc}") from None
        raise
    return result
