"""The .npy reader: every header form numpy writes, and what it must refuse."""

from __future__ import annotations

import io

import numpy as np
import pytest

from lens.data.readers import ImageReadError, read_header, read_image


def _npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    return buffer.getvalue()


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
def test_every_format_version_reads_back_exactly(tmp_path, version):
    a = np.random.default_rng(0).random((2, 7, 5)).astype(np.float32)
    path = tmp_path / "a.npy"
    path.write_bytes(_npy(a, version))
    assert np.array_equal(read_image(str(path)), a)
    assert read_header(str(path)).shape == (2, 7, 5)


def test_fortran_order_and_big_endian(tmp_path):
    a = np.asfortranarray(np.arange(35, dtype=">f8").reshape(7, 5))
    path = tmp_path / "f.npy"
    path.write_bytes(_npy(a))
    assert np.array_equal(read_image(str(path)), a.reshape(1, 7, 5))


def test_a_header_longer_than_the_first_read(tmp_path):
    # A valid header padded with spaces to 2,000 bytes: read in a second pread.
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }"
    header = text.ljust(2000 - 10 - 1) + "\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1")
    path = tmp_path / "long.npy"
    path.write_bytes(raw + a.tobytes())
    assert np.array_equal(read_image(str(path)), a.reshape(1, 3, 4))


def test_an_absurd_header_length_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + (0xFFFF0000).to_bytes(4, "little") + b"{")
    for reader in (read_header, read_image):
        with pytest.raises(ImageReadError, match="header of 4294901760 bytes"):
            reader(str(path))


def test_data_cut_short_is_named_as_truncated(tmp_path):
    path = tmp_path / "cut.npy"
    path.write_bytes(_npy(np.zeros((8, 8)))[:-10])
    with pytest.raises(ImageReadError, match="truncated: read 502 of 512 data bytes"):
        read_image(str(path))
    with pytest.raises(ImageReadError, match="truncated: .* the header promises"):
        read_header(str(path))
    path.write_bytes(b"\x93NUMPY\x01\x00\x76")  # the header length itself is cut
    with pytest.raises(ImageReadError, match="truncated .npy header"):
        read_image(str(path))
