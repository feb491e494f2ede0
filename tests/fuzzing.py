"""Seeded fuzzing of image files: valid seeds of every supported format, and mutations that break them in the ways real files break."""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import tifffile
from PIL import Image

from tests import faults


def seed_files(seed: int = 0) -> dict[str, bytes]:
    """Valid files of every format trainwell reads: several TIFF compressions and sample formats,
    an animated GIF, a palette PNG, 16-bit PNG, WebP, float and integer .npy."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
    files = {f"seed.{ext}": faults.encode(pixels, fmt) for ext, fmt in
             (("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"), ("webp", "WEBP"))}
    files["palette.png"] = faults.encode(Image.fromarray(pixels).convert("P"), "PNG")
    files["deep.png"] = faults.encode(Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG")
    frames = [Image.fromarray(np.roll(pixels, shift, axis=1)) for shift in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    files["animated.gif"] = buffer.getvalue()
    for name, array, options in (("plain", pixels, {}), ("zlib", pixels, {"compression": "zlib"}),
                                 ("float", pixels.astype(np.float32) / 255, {}),
                                 ("u16", pixels.astype(np.uint16) * 257, {"compression": "zlib"}),
                                 ("grey", pixels[..., 0], {"photometric": "minisblack"})):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, **({"photometric": "rgb"} | options))
        files[f"{name}.tif"] = buffer.getvalue()
    files["lzw.tif"] = faults.encode(Image.fromarray(pixels), "TIFF", compression="tiff_lzw")
    for name, array in (("uint8", pixels), ("float", pixels / 255.0)):
        buffer = io.BytesIO()
        np.save(buffer, array)
        files[f"{name}.npy"] = buffer.getvalue()
    return files


EXTREMES = [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00", b"\x00\x00\x02\x58",
            b"\x80\x00\x00\x00"]


def _header_field(blob: bytearray, rng: random.Random) -> None:
    """A header field (dimensions, sample counts, bit depths, frame counts, offsets) set to an extreme."""
    if blob.startswith(b"\x89PNG") and len(blob) > 29:  # IHDR: width, height (4 bytes), depth, colour type
        position = rng.choice([16, 20, 24, 25])
        blob[position:position + (4 if position < 24 else 1)] = rng.choice(EXTREMES)[: 4 if position < 24 else 1]
        return
    if blob[:2] in (b"II", b"MM") and len(blob) > 16:  # TIFF: rewrite one IFD entry's value
        little = blob[:2] == b"II"
        ifd = struct.unpack("<I" if little else ">I", bytes(blob[4:8]))[0]
        if ifd + 2 < len(blob):
            count = struct.unpack("<H" if little else ">H", bytes(blob[ifd:ifd + 2]))[0]
            entry = ifd + 2 + 12 * rng.randrange(max(1, min(count, 20)))
            if entry + 12 <= len(blob):
                blob[entry + 8:entry + 12] = rng.choice(EXTREMES)
                return
    if blob.startswith(b"\x93NUMPY"):  # the header dict's shape
        header_end = blob.find(b"\n", 10)
        text = bytes(blob[10:header_end]).replace(b"(24, 20, 3)", rng.choice([b"(0, 20, 3)", b"(24, 20, 9)",
                                                                          b"(100000, 100000, 3)", b"(24,)"]))
        blob[10:header_end] = text.ljust(header_end - 10)[: header_end - 10]
        return
    position = rng.randrange(min(len(blob), 64))
    blob[position:position + 4] = rng.choice(EXTREMES)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One seeded mutation: bit flips, a truncation, a header field set to an extreme, a duplicated,
    dropped or reordered chunk of bytes."""
    blob = bytearray(data)
    choice = rng.randrange(6)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(blob))
            blob[position] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del blob[rng.randrange(1, len(blob)):]
    elif choice == 2:
        _header_field(blob, rng)
    elif choice == 3:
        start = rng.randrange(len(blob))
        end = min(len(blob), start + rng.randint(1, 64))
        blob[end:end] = blob[start:end] * rng.randint(1, 3)
    elif choice == 4:
        start = rng.randrange(len(blob))
        del blob[start:start + rng.randint(1, 64)]
    else:
        first, second = sorted(rng.sample(range(len(blob)), 2))
        size = min(rng.randint(4, 64), second - first, len(blob) - second)
        blob[first:first + size], blob[second:second + size] = blob[second:second + size], blob[first:first + size]
    return bytes(blob)


def corpus(count: int, seed: int = 0) -> dict[str, bytes]:
    """`count` mutated files named class/name, spread over two class folders, deterministic for a seed."""
    pick = random.Random(seed)
    seeds = seed_files(seed)
    names = sorted(seeds)
    files = {}
    for index in range(count):
        name = names[index % len(names)]
        stem, ext = name.rsplit(".", 1)
        files[f"{'ab'[index % 2]}/{stem}-{index}.{ext}"] = mutate(seeds[name], pick)
    return files
