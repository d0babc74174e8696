"""Read one image file safely: .npy without pickle, PNG and JPEG with Pillow.

Every image comes back channels-first, (C, H, W). ``read_header`` reads only what is needed
to validate a file (shape, dtype, size on disk) so a whole dataset can be checked before
anything is written; ``read_image`` reads the pixels.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

import numpy as np

MAX_CHANNELS = 16  # more than this in the first axis is not an image's channel axis

# Pillow mode -> (mode to convert to, channels, value that maps to 1.0). 8- and 16-bit images
# are scaled to [0, 1] like torchvision's ToTensor; alpha is dropped.
_PIL_MODES = {
    "1": ("L", 1, 255.0),
    "L": ("L", 1, 255.0),
    "LA": ("L", 1, 255.0),
    "P": ("RGB", 3, 255.0),
    "PA": ("RGB", 3, 255.0),
    "RGB": ("RGB", 3, 255.0),
    "RGBA": ("RGB", 3, 255.0),
    "RGBX": ("RGB", 3, 255.0),
    "CMYK": ("RGB", 3, 255.0),
    "YCbCr": ("RGB", 3, 255.0),
    "I;16": ("I;16", 1, 65535.0),
    "I;16B": ("I;16B", 1, 65535.0),
    "I;16L": ("I;16L", 1, 65535.0),
    "I": ("I", 1, 65535.0),  # how Pillow opens 16-bit grayscale PNG
    "F": ("F", 1, 1.0),
}


class ImageReadError(Exception):
    """A file that cannot be used as an image; the message says why (not which file)."""


@dataclass(frozen=True)
class Header:
    shape: tuple[int, int, int]  # (C, H, W)
    dtype: str  # numpy dtype of the pixels as stored in the file


def kind(path: str) -> str:
    return "npy" if path.lower().endswith(".npy") else "pil"


def read_header(path: str) -> Header:
    if kind(path) == "npy":
        shape, dtype, _, _ = _npy_header(path)
        return Header(_chw(shape), dtype.str)
    return _pil_header(path)


def read_image(path: str) -> np.ndarray:
    """The pixels as (C, H, W), in the file's numeric dtype (PNG/JPEG: float32 in [0, 1])."""
    if kind(path) == "npy":
        return _npy_read(path)
    return _pil_read(path)


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W), (1, H, W) or (C, H, W) -> (C, H, W); anything else is an error."""
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ImageReadError(f"shape {shape}: expected (H, W), (1, H, W) or (C, H, W)")
    c, h, w = shape
    if min(shape) == 0:
        raise ImageReadError(f"shape {shape}: empty image")
    if c > MAX_CHANNELS or w <= 4 < c:
        hint = " (looks channels-last; lens expects (C, H, W))" if w <= MAX_CHANNELS else ""
        raise ImageReadError(f"shape {shape}: {c} channels in the first axis{hint}")
    return (c, h, w)


def _npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file; checks its size on disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            header = _npy_parse(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as exc:
        raise ImageReadError(f"not a readable .npy file ({_short(exc)})") from None
    shape, dtype, _, offset = header
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise ImageReadError(f"truncated: {size} bytes, the header promises {expected}")
    return header


# The header np.save writes, parsed with one regex; anything else goes through ast.literal_eval
# (safe: literals only), as numpy's own reader does, but ten times slower.
_HEADER = re.compile(
    r"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (False|True), "
    r"'shape': \(((?:\d+, ?)*\d*)\), \} *\n?$"
)
_FIRST_READ = 256  # np.save pads its header to 128 bytes (64 in old numpy): one read
_MAX_HEADER = 1 << 16  # numpy itself refuses headers over 10,000 bytes by default


def _npy_parse(fd: int) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    # Plain pread on a descriptor: a buffered file object costs more than the read itself.
    head = os.pread(fd, _FIRST_READ, 0)
    if len(head) < 8 or head[:6] != b"\x93NUMPY":
        raise ImageReadError("not a .npy file (bad magic bytes)")
    major = head[6]
    if major not in (1, 2, 3):
        raise ImageReadError(f".npy format version {major} is not supported")
    size_bytes = 2 if major == 1 else 4
    start = 8 + size_bytes
    if len(head) < start:
        raise ImageReadError("truncated .npy header")
    length = int.from_bytes(head[8:start], "little")
    if length > _MAX_HEADER:
        raise ImageReadError(f".npy header of {length} bytes (more than {_MAX_HEADER})")
    raw = head[start : start + length]
    if len(raw) < length:
        raw = os.pread(fd, length, start)
        if len(raw) < length:
            raise ImageReadError("truncated .npy header")
    text = raw.decode("latin1" if major < 3 else "utf8", errors="replace")
    shape, dtype, fortran = _parse_header(text)
    if dtype.hasobject:
        raise ImageReadError("holds Python objects (pickled); lens reads .npy without pickle")
    if dtype.kind not in "fiu" or dtype.fields is not None:
        raise ImageReadError(f"dtype {dtype} is not a real-valued numeric image type")
    return shape, dtype, fortran, start + length


def _parse_header(text: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    m = _HEADER.match(text)
    try:
        if m:
            shape = tuple(int(x) for x in m[3].split(",") if x.strip())
            return shape, np.dtype(m[1]), m[2] == "True"
        d = ast.literal_eval(text)
        shape, fortran = d["shape"], d["fortran_order"]
        dtype = np.lib.format.descr_to_dtype(d["descr"])
        if not (isinstance(shape, tuple) and all(isinstance(x, int) and x >= 0 for x in shape)):
            raise ValueError(f"bad shape {shape!r}")
        return shape, dtype, bool(fortran)
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError) as exc:
        raise ImageReadError(f"not a readable .npy header ({_short(exc)})") from None


def _npy_read(path: str) -> np.ndarray:
    # One open, a header read and one read straight into the array: no pickle is ever
    # possible, and no extra copy.
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            shape, dtype, fortran, offset = _npy_parse(fd)
            chw = _chw(shape)
            out = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
            got = _pread_into(fd, memoryview(out.reshape(-1).view(np.uint8)), offset)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ImageReadError(f"read failed ({_short(exc)})") from None
    if got != out.nbytes:
        raise ImageReadError(f"truncated: read {got} of {out.nbytes} data bytes")
    if fortran:
        out = out.T
    return out.reshape(chw)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` until it is full or the file ends; bytes read."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


def _pil_header(path: str) -> Header:
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except Exception as exc:  # Pillow raises many types for bad files
        raise ImageReadError(f"not a readable PNG/JPEG image ({_short(exc)})") from None
    if mode not in _PIL_MODES:
        raise ImageReadError(f"image mode {mode} is not supported")
    return Header(_chw((_PIL_MODES[mode][1], h, w)), "float32")


def _pil_read(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in _PIL_MODES:
                raise ImageReadError(f"image mode {im.mode} is not supported")
            target, channels, scale = _PIL_MODES[im.mode]
            im = im.convert(target) if im.mode != target else im
            im.load()
            arr = np.asarray(im)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"not a readable PNG/JPEG image ({_short(exc)})") from None
    arr = arr.astype(np.float32)
    if scale != 1.0:
        arr /= scale
    return arr.reshape(arr.shape[0], arr.shape[1], -1).transpose(2, 0, 1)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
