"""Atomic file writes: write to a temporary sibling, fsync, then rename into place.

A reader (or a crash) never sees a half-written file: it sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lens.errors import LensError


def temp_sibling(path: Path) -> Path:
    """A temporary path in the same directory (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, else delete it.

    Works for writers that want a path rather than a file object (h5py, torch.save).
    """
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if _storage_failure(exc):
            raise _storage_error(path, exc) from exc
        if isinstance(exc, OSError) and exc.filename == os.fspath(tmp):
            # name the file the user asked for, not our temporary (same errno, same subclass)
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from exc
        raise


# Writes that failed because of where they write (full, over quota, read-only), not what.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
# torch.save reports a full disk as a RuntimeError of its zip writer, not as an OSError.
_TORCH_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")


def _storage_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITER_FAILURES)


def _storage_error(path: Path, exc: BaseException) -> LensError:
    """A LensError naming the file, the reason and the free space; the old file is intact."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:
        reason = f"torch.save failed: {str(exc).strip().splitlines()[0]}; usually a full disk"
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
    return LensError(f"{path}: could not be written ({reason}; {free}); {kept}")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths: the common non-JSON types in results
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _fsync_file(path: Path) -> None:
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
