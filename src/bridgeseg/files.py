"""Where results go: output locations checked before the work, files written atomically with the
user's usual mode, and write failures that name the file.

- ``check_output_folder`` / ``check_output_file``: whether a job's outputs can be written, found
  out before the job starts (a path that is a file, or lies under one; a folder that cannot be
  written). Nothing is created: a folder is made when its first file is written.
- ``atomic_write`` / ``write_text``: a temporary file in the same folder, flushed to disk, then
  renamed over the target; a run killed mid-write or a full disk never leaves half a file, and the
  previous version stays when the write fails. The file gets the mode a plain ``open()`` would
  give it (the existing file's, else ``0o666`` less the umask), not the temporary file's ``0o600``.
- ``OutputError``: an output that cannot be written; the message names the file and what was
  kept. ``writing(target)`` turns the ``OSError`` of any block of writes into one.

This module imports nothing of bridgeseg's.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class OutputError(OSError):
    """An output cannot be written; the message names the file (or folder) and what was kept."""


@contextlib.contextmanager
def writing(target: str | Path, kept: str = "", name_file: bool = True) -> Iterator[None]:
    """Raise an ``OSError`` of the block as an ``OutputError``: "could not write TARGET (reason)",
    then ``kept`` (what was kept). ``target`` is a file or a description ("the report in DIR");
    with ``name_file`` the file the error names, if another, is added to the reason."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        if name_file and error.filename and str(error.filename) != str(target):
            reason = f"{error.filename}: {reason}"
        raise OutputError(f"could not write {target} ({reason})" + (f"; {kept}" if kept else "")) from error


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` for a relative path under nothing)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _probe(folder: Path, label: str) -> None:
    """Create and remove a file in ``folder``: whether files can be made there (permissions, a
    read-only file system); ``label`` starts the error message."""
    try:
        handle, name = tempfile.mkstemp(prefix=".bridgeseg-write-test-", dir=folder)
    except OSError as error:
        raise OutputError(f"{label} cannot be written: no file can be created in {folder} "
                          f"({error.strerror or error}); choose another location") from None
    os.close(handle)
    os.unlink(name)


def _check_parent(folder: Path, label: str) -> None:
    """``folder`` exists and is writable, or can be created under an ancestor that is."""
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise OutputError(f"{label} lies under {ancestor}, which is a file, not a folder; choose another location")
    _probe(ancestor, label)


def check_output_folder(path: str | Path, option: str | None = None) -> Path:
    """Raise ``OutputError`` now (before any work) unless files can be written into folder ``path``.

    ``option`` (e.g. ``"--out"``) names the command-line option in the message.
    """
    path = Path(path)
    label = f"{option} {path}" if option else f"output folder {path}"
    if path.exists() and not path.is_dir():
        raise OutputError(f"{label} is a file, not a folder; give a folder (it is created if missing)")
    _check_parent(path, label)
    return path


def check_output_file(path: str | Path, option: str | None = None) -> Path:
    """Raise ``OutputError`` now (before any work) unless file ``path`` can be written (atomically:
    its folder must take a new file). ``option`` (e.g. ``"--json"``) names the option in the message."""
    path = Path(path)
    label = f"{option} {path}" if option else f"output file {path}"
    if path.is_dir():
        raise OutputError(f"{label} is a folder; give a file name")
    if path.exists() and not path.is_file():  # a device or a pipe (/dev/stdout): written in place
        if not os.access(path, os.W_OK):
            raise OutputError(f"{label} cannot be written (permission denied)")
        return path
    _check_parent(path.parent, label)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """The mode a plain ``open(target, "w")`` leaves: the existing file's, else 0o666 less the umask."""
    if target.is_file():
        return stat.S_IMODE(target.stat().st_mode)
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write file ``path`` with ``write(binary_file)``, atomically (see the module docstring).

    A symbolic link is followed (its target is replaced); a device or pipe is written in place.

    Raises:
        OutputError: naming the file; its previous version, if any, is unchanged.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        with writing(path), open(target, "wb") as file:
            write(file)
        return path
    kept = f"the previous {path.name} is kept" if target.is_file() else ""
    with writing(path, kept, name_file=False):  # not the temporary file's name
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = _file_mode(target)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                os.fchmod(file.fileno(), mode)
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))
