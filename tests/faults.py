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


def scan_bomb_jpeg(width: int = 6000, height: int = 6000, scans: int = 30_000) -> bytes:
    """A real progressive greyscale JPEG with `scans` AC scans that code nothing: each is ~44 bytes
    (a few end-of-band runs of up to 32,767 blocks) but makes libjpeg walk every block of the image
    again, so 30,000 of them at 6000x6000 keep a decoder busy for minutes inside C (~5-10 ms a scan
    here), where no Python alarm can stop it. Every header field is valid and within the pixel limit."""
    import struct

    def segment(marker: int, payload: bytes) -> bytes:
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    blocks = -(-width // 8) * -(-height // 8)
    data = bytearray(b"\xff\xd8")
    data += segment(0xDB, b"\x00" + bytes([1] * 64))  # one quantisation table of ones
    data += segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")  # progressive, one component
    # Huffman tables of one 1-bit code each: DC category 0 (no change), and AC symbol 0xE0 (an
    # end-of-band run of 2^14 blocks plus a 14-bit count).
    data += segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    data += segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")
    data += segment(0xDA, b"\x01\x01\x00\x00\x00\x00")  # the DC scan: one 0 bit per block
    data += b"\x00" * (blocks // 8) + (bytes([0xFF >> (blocks % 8)]) if blocks % 8 else b"")
    runs = [32767] * (blocks // 32767) + ([max(blocks % 32767, 1 << 14)] if blocks % 32767 else [])
    bits = "".join("0" + format(run - (1 << 14), "014b") for run in runs)
    bits += "1" * (-len(bits) % 8)
    entropy = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    data += (segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + entropy) * scans  # AC scans, coefficients 1-63
    return bytes(data + b"\xff\xd9")
