"""TIFF as stored: RGB float with NaN, 16-bit RGB, LZW through tensorflow-io; TIFF sets train end to end."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from trainwell.data.decode import DecodeError, _tensorflow_io_tiff, decode_image
from trainwell.stages import audit, build, split, train


def tiff_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def lzw_tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF", compression="tiff_lzw")
    return buffer.getvalue()


def test_rgb_float_tiff_is_read_as_stored_and_nan_is_counted():
    values = np.linspace(0, 1, 4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    decoded = decode_image(tiff_bytes(values, photometric="rgb"), suffix=".tif")
    np.testing.assert_array_equal(decoded.image, np.rint(values * 255).astype(np.uint8))
    values[1, 2, 0] = values[3, 3, 2] = np.nan
    with pytest.raises(DecodeError) as caught:
        decode_image(tiff_bytes(values, photometric="rgb"), suffix=".tif")
    assert caught.value.kind == "nan" and "2 of 60 values are NaN" in caught.value.detail


def test_16_bit_rgb_tiff_keeps_its_range_and_says_so():
    values = np.array([[[0, 32768, 65535]]], dtype=np.uint16).repeat(3, axis=0).repeat(3, axis=1)
    decoded = decode_image(tiff_bytes(values, photometric="rgb"), suffix=".tiff")
    assert decoded.image[0, 0].tolist() == [0, 128, 255]
    assert ("high_bit_depth", "uint16 reduced to 8 bits") in decoded.notes


def test_lzw_tiff_decodes_through_tensorflow_io():
    rgb = np.random.default_rng(0).integers(0, 255, size=(6, 7, 3), dtype=np.uint8)
    data = lzw_tiff(rgb)
    np.testing.assert_array_equal(_tensorflow_io_tiff(data, samples=3), rgb)  # libtiff via tensorflow-io
    decoded = decode_image(data, suffix=".tif")
    np.testing.assert_array_equal(decoded.image, rgb)
    assert decoded.notes == []  # libtiff's RGBA is not the file's alpha


def test_truncated_and_multipage_tiffs():
    rgb = np.full((40, 40, 3), 90, np.uint8)
    data = tiff_bytes(rgb, photometric="rgb")
    with pytest.raises(DecodeError) as caught:
        decode_image(data[: len(data) - 600], suffix=".tif")
    assert caught.value.kind == "truncated"
    pages = tiff_bytes(np.stack([rgb, rgb]), photometric="rgb")
    assert ("animated", "2 pages; only the first is used") in decode_image(pages, suffix=".tif").notes


@pytest.mark.train
def test_a_tiff_dataset_audits_builds_and_trains(demo_copy: Path, workdir: Path, capsys):
    # Every demo JPEG becomes a TIFF: a third RGB float32, a third 16-bit RGB, a third LZW.
    for number, path in enumerate(sorted(demo_copy.rglob("*.jpg"))):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        if number % 3 == 0:
            data = tiff_bytes(rgb.astype(np.float32) / 255.0, photometric="rgb")
        elif number % 3 == 1:
            data = tiff_bytes(rgb.astype(np.uint16) * 257, photometric="rgb")
        else:
            data = lzw_tiff(rgb)
        path.with_suffix(".tif").write_bytes(data)
        path.unlink()
    assert audit.main() == 0 and split.main() == 0 and build.main() == 0
    output = capsys.readouterr().out
    assert "audited 60 files" in output and "0 quarantined" in output
    assert train.main() == 0
    assert "epochs 1-2 over 30 training and 15 validation images" in capsys.readouterr().out
