"""Atomic output: build a directory next to its destination and rename it into place at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ConvertError, DestinationExistsError


def check_destination(source: Path, dest: Path, overwrite: bool) -> Path:
    """Validate ``dest`` against ``source`` before any work: returns the absolute destination.

    Refuses a destination inside the source (or equal to it), a source inside the destination when
    overwriting (that would delete the source), and an existing destination without ``overwrite``.
    """
    dest = Path(os.path.abspath(Path(dest).expanduser()))
    src = source.resolve()
    real_dest = dest.resolve()
    if real_dest == src or src in real_dest.parents:
        raise ConvertError(f"destination {dest} is inside the source {source}: choose a directory outside it")
    if dest.exists() and not overwrite:
        raise DestinationExistsError(
            f"{dest} already exists: pass overwrite=True to replace it, or pick another path"
        )
    if dest.exists() and real_dest in src.parents:
        raise ConvertError(
            f"the source {source} is inside the destination {dest}; overwriting would delete it"
        )
    return dest


@contextlib.contextmanager
def atomic_directory(dest: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``dest``; on success it becomes ``dest``.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and ``dest`` is
    left exactly as it was. An existing ``dest`` is replaced only when ``overwrite`` is True, and only
    after the new output is complete.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DestinationExistsError(
            f"{dest} already exists: pass overwrite=True to replace it, or pick another path"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists() or dest.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            aside = old / "previous"
            os.rename(dest, aside)
            try:
                os.rename(tmp, dest)
            except BaseException:
                os.rename(aside, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
