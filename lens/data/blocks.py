"""The work done on a block of files, in a worker process or inline: read headers, or decode,
transform and hash images into a buffer (a shared-memory slot when there are workers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lens.data.h5file import image_hash
from lens.data.readers import Header, ImageReadError, read_header, read_image
from lens.data.transforms import Transform, apply


def warm() -> None:
    """Nothing: submitted to start a worker process, whose unpickling imports this module."""


def read_headers(paths: tuple[str, ...]) -> list[Header | str]:
    """Each file's header, or the reason it cannot be read."""
    out: list[Header | str] = []
    for path in paths:
        try:
            out.append(read_header(path))
        except ImageReadError as exc:
            out.append(str(exc))
    return out


@dataclass(frozen=True)
class DecodeJob:
    paths: tuple[str, ...]
    shape: tuple[int, int, int]  # stored (C, H, W)
    transform: Transform
    shm_name: str | None = None  # write into this shared memory...
    offset: int = 0  # ...at this byte offset; None: into the ``out`` given inline


@dataclass
class DecodeResult:
    hashes: list[str] = field(default_factory=list)  # "" where the image failed
    nonfinite: list[int] = field(default_factory=list)  # indices in the block
    overflow: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    misfits: list[tuple[int, tuple[int, int, int]]] = field(default_factory=list)  # (i, C,H,W)


_attached: dict[str, object] = {}  # shared memory attached by this worker, by name


def _shared_block(job: DecodeJob) -> np.ndarray:
    from multiprocessing import shared_memory

    shm = _attached.get(job.shm_name or "")
    if shm is None:
        shm = shared_memory.SharedMemory(name=job.shm_name)
        _attached[job.shm_name or ""] = shm
    return np.ndarray(
        (len(job.paths), *job.shape),
        dtype=np.dtype(job.transform.dtype).newbyteorder("<"),
        buffer=shm.buf,  # type: ignore[attr-defined]
        offset=job.offset,
    )


def decode(job: DecodeJob, out: np.ndarray | None = None) -> DecodeResult:
    """Decode ``job.paths`` into ``out`` (or the job's shared-memory slot)."""
    if out is None:
        out = _shared_block(job)
    result = DecodeResult()
    c, h, w = job.shape
    t = job.transform
    for i, path in enumerate(job.paths):
        try:
            image = read_image(path)
        except (ImageReadError, ValueError) as exc:
            result.errors.append((i, str(exc)))
            result.hashes.append("")
            continue
        if image.shape[0] != c or _output_hw(t, image.shape) != (h, w):
            result.misfits.append((i, image.shape))  # reported by the caller, who sees all
            result.hashes.append("")
            continue
        nonfinite, overflow = apply(image, t, out[i])
        if nonfinite:
            result.nonfinite.append(i)
        if overflow:
            result.overflow.append(i)
        result.hashes.append(image_hash(out[i]))
    return result


def _output_hw(t: Transform, shape: tuple[int, ...]) -> tuple[int, int] | None:
    try:
        return t.output_hw(shape[1], shape[2])
    except ValueError:  # smaller than --crop
        return None


class Slots:
    """The writer's side of the buffers: ``depth`` slots of ``block`` images, in shared memory
    when worker processes decode (``DecodeJob.shm_name``), else one plain array. Block j
    always lands in slot j % depth (see lens.data.pool)."""

    def __init__(
        self, depth: int, block: int, shape: tuple[int, int, int], dtype: str, shared: bool
    ) -> None:
        self.depth, self.block, self.shape = depth, block, shape
        self.dtype = np.dtype(dtype).newbyteorder("<")  # the byte order of /images
        self.slot_bytes = block * int(np.prod(shape)) * np.dtype(dtype).itemsize
        self._shm = None
        self.name: str | None = None
        if shared:
            from multiprocessing import shared_memory

            self._shm = shared_memory.SharedMemory(create=True, size=depth * self.slot_bytes)
            self.name = self._shm.name
            self._buffer = self._shm.buf
        else:
            self._plain = np.empty((block, *shape), dtype=self.dtype)

    def offset(self, j: int) -> int:
        return (j % self.depth) * self.slot_bytes if self.name else 0

    def at(self, offset: int) -> np.ndarray:
        """The slot at byte ``offset`` (a job's ``offset``), for decoding in this process."""
        if self._shm is None:
            return self._plain
        return np.ndarray(
            (self.block, *self.shape), self.dtype, buffer=self._buffer, offset=offset
        )

    def array(self, j: int) -> np.ndarray:
        return self.at(self.offset(j))

    def release(self) -> None:
        if self._shm is not None:
            del self._buffer
            try:
                self._shm.close()
            except BufferError:  # a view still alive in a traceback; unmapped at exit
                pass
            self._shm.unlink()
            self._shm = None
