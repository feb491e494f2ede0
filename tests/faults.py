"""Builders for broken and unusual image files, written with real encoders onto real disk."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def image_array(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_bytes(seed: int = 0, size: int = 32) -> bytes:
    return encode(image_array(seed, size), "JPEG", quality=90)


def png_bytes(seed: int = 0, size: int = 32) -> bytes:
    return encode(image_array(seed, size), "PNG")


def truncated_jpeg(seed: int = 0) -> bytes:
    whole = jpeg_bytes(seed)
    return whole[: len(whole) // 2]


def broken_crc_png(seed: int = 0) -> bytes:
    data = bytearray(png_bytes(seed))
    # The IDAT chunk's CRC sits right before the IEND chunk; flip a bit in it.
    iend = data.rindex(b"IEND")
    data[iend - 8] ^= 0xFF
    return bytes(data)


def npy_with_nan() -> bytes:
    array = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    array[3, 4, 1] = np.nan
    array[5, 6, 0] = np.nan
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def bomb_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels: only the header is real."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
