"""Seeded fuzzing of image files: valid seeds of every supported format, and mutations that break them in the ways real files break."""

from __future__ import annotations

import io
import random
import struct
import zlib

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


# --- Bombs for the served signature: files whose headers or structure ask a decoder for far more
# work than their bytes, each with the words the refusal must contain (None: must be served). ---

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR (CRC fixed) claims width x height."""
    data = faults.encode(np.zeros((4, 4, 3), np.uint8), "PNG")
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _png_chunk(b"IHDR", ihdr) + data[33:]


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(faults.encode(np.zeros((4, 4, 3), np.uint8), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A baseline JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(faults.encode(np.zeros((16, 16, 3), np.uint8), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_scans(extra_scans: int, side: int = 64) -> bytes:
    """A progressive JPEG with its last scan repeated: every repeat is a pass over the whole image."""
    data = faults.encode(np.zeros((side, side, 3), np.uint8), "JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    scan = data[last:-2]  # up to the end-of-image marker
    return data[:-2] + scan * extra_scans + data[-2:]


def lzw_constant(pixels: int, *, colour: int = 0, code_size: int = 2) -> bytes:
    """GIF LZW data for `pixels` pixels of one colour, coded as giflib's encoder codes it: each code
    covers one pixel more than the one before, so a few KB hold millions of pixels."""
    clear, end = 1 << code_size, (1 << code_size) + 1
    state = {"bits": code_size + 1, "next": end + 1, "buffer": 0, "filled": 0}
    out = bytearray()

    def emit(code: int) -> None:
        state["buffer"] |= code << state["filled"]
        state["filled"] += state["bits"]
        while state["filled"] >= 8:
            out.append(state["buffer"] & 0xFF)
            state["buffer"] >>= 8
            state["filled"] -= 8
        if state["next"] >= 1 << state["bits"] and code <= 4095 and state["bits"] < 12:
            state["bits"] += 1

    emit(clear)
    longest, covered = 1, 0  # the longest run of the colour the table has a code for
    while covered < pixels:
        run = min(longest, pixels - covered)
        emit(colour if run == 1 else end + run - 1)
        covered += run
        if covered < pixels and state["next"] >= 4095:  # the table is full: start a new one
            emit(clear)
            state.update(bits=code_size + 1, next=end + 1)
            longest = 1
        elif covered < pixels:
            state["next"] += 1
            longest += 1
    emit(end)
    if state["filled"]:
        out.append(state["buffer"] & 0xFF)
    return bytes(out)


def gif(screen: tuple[int, int], frames: list[tuple[int, int, bytes]], *, sub_block: int = 255) -> bytes:
    """A GIF89a of a two-colour global table and frames (width, height, LZW data) in sub-blocks."""
    out = [b"GIF89a", struct.pack("<HHBBB", *screen, 0x80, 0, 0), b"\x00\x00\x00\xff\xff\xff"]
    for width, height, data in frames:
        out.append(b"\x21\xf9\x04\x00\x0a\x00\x00\x00")  # graphic control: 0.1 s a frame
        out.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02")
        for start in range(0, len(data), sub_block):
            piece = data[start : start + sub_block]
            out.append(bytes([len(piece)]) + piece)
        out.append(b"\x00")
    out.append(b"\x3b")
    return b"".join(out)


def served_bombs(max_pixels: int, max_bytes: int, seed: int = 0) -> dict[str, tuple[bytes, str | None]]:
    """Generated hostile requests for a served model with these limits: name -> (bytes, words the
    refusal names, or None for a file that must be served because only harmless parts are read)."""
    rng = random.Random(seed)
    side = int(max_pixels**0.5)
    bombs: dict[str, tuple[bytes, str | None]] = {}
    for index in range(4):
        # Past the limit by one pixel up to the largest each header can state.
        width = rng.choice([side + 1, rng.randrange(side + 1, 65536), 65535])
        height = max(max_pixels // width + 1, rng.randrange(1, 65536))
        bombs[f"png-pixels-{index}"] = (png_claiming(width, height), f"{width}x{height} = {width * height} pixels")
        # libjpeg itself refuses a side over 65500 (JPEG_MAX_DIMENSION), before trainwell's check can.
        jpeg_width, jpeg_height = min(width, 65500), min(max(height, max_pixels // min(width, 65500) + 1), 65500)
        bombs[f"jpeg-pixels-{index}"] = (jpeg_claiming(jpeg_width, jpeg_height),
                                         f"{jpeg_width}x{jpeg_height} = {jpeg_width * jpeg_height} pixels")
        bombs[f"bmp-pixels-{index}"] = (bmp_claiming(width, -height if index % 2 else height),
                                        f"{width}x{height} = {width * height} pixels")
        tiny = lzw_constant(16)
        bombs[f"gif-screen-{index}"] = (gif((width, height), [(4, 4, tiny)]), f"{width}x{height} = ")
        bombs[f"gif-first-frame-{index}"] = (gif((4, 4), [(width, height, lzw_constant(64))]), f"{width}x{height} = ")
        scans = rng.randrange(55, 3000)  # and the 10 a progressive JPEG has
        bombs[f"jpeg-scans-{index}"] = (jpeg_scans(scans), "more than 64 JPEG scans")
        padding = rng.randrange(1, 1 << 16)
        bombs[f"bytes-{index}"] = (faults.jpeg_bytes(index) + bytes(max_bytes + padding),
                                   f"bytes, more than the limit of {max_bytes}")
    # A frame after the first, as large as the format allows, with real data for millions of
    # pixels: never decoded, so the request is served.
    later = lzw_constant(50_000_000, colour=1)
    bombs["gif-later-frames"] = (gif((8, 8), [(8, 8, lzw_constant(64))] + [(16000, 16000, later)] * 3), None)
    # Real pixels behind a real header (300 MB of them), decoded by nothing.
    real = min(10 * side, 10_000)  # past any limit up to 100 million pixels, in about 300 KB
    bombs["png-real-pixels"] = (png_zeros(real, real), f"{real}x{real} = ")
    bombs["gif-100-frames"] = (gif((32, 32), [(32, 32, lzw_constant(32 * 32, colour=index % 2)) for index in range(100)]),
                               None)
    # Data sub-blocks of 1 and 2 bytes, alternating: no encoder writes them, and each is a step.
    uneven = b"".join(b"\x01\x00" if index % 2 else b"\x02\x00\x00" for index in range(3000))
    bombs["gif-uneven-sub-blocks"] = (gif((4, 4), [(4, 4, b"")])[:-2] + uneven + b"\x00\x3b", "more than 1024 steps")
    bombs["gif-no-image"] = (gif((4, 4), []), "a GIF without an image")
    bombs["gif-truncated"] = (gif((4, 4), [(4, 4, lzw_constant(16))])[:-4], "ends before its first image does")
    # Start-of-scan markers and nothing else, up to the byte limit: counting them must not copy them.
    bombs["jpeg-marker-flood"] = (faults.jpeg_bytes(0)[:-2] + b"\xff\xda" * ((max_bytes - 8192) // 2),
                                  "more than 64 JPEG scans")
    bombs["jpeg-past-libjpeg"] = (jpeg_claiming(65535, 65535), "Invalid JPEG data")
    bombs["webp"] = (faults.encode(np.zeros((4, 4, 3), np.uint8), "WEBP"), "not a JPEG, PNG, GIF or BMP")
    bombs["tiff"] = (faults.encode(np.zeros((4, 4, 3), np.uint8), "TIFF"), "not a JPEG, PNG, GIF or BMP")
    bombs["empty"] = (b"", "not a JPEG, PNG, GIF or BMP")
    bombs["png-without-ihdr"] = (png_claiming(4, 4)[:12] + b"IHDX" + png_claiming(4, 4)[16:], "first chunk")
    return bombs


def png_zeros(width: int, height: int) -> bytes:
    """A real PNG of width x height black RGB pixels, compressed row by row (never all in memory):
    a 10000x10000 one is about 300 KB and decodes to 300 MB."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte, then the pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def gif_first_image_reference(data: bytes) -> tuple[int, int, int] | str:
    """(end of the first image's data, its width, its height) by a plain walk of the GIF's blocks,
    or why there is none: "bad_block", "no_image", "truncated"."""
    if len(data) < 13:
        return "truncated"
    position = 13 + (3 * (2 << (data[10] & 7)) if data[10] & 0x80 else 0)
    while True:
        if position >= len(data):
            return "truncated"
        kind = data[position]
        if kind == 0x3B:
            return "no_image"
        if kind not in (0x21, 0x2C):
            return "bad_block"
        descriptor = position
        if kind == 0x21:
            position += 2
        else:
            if position + 10 >= len(data):
                return "truncated"
            flags = data[position + 9]
            position += 11 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
            if position > len(data):
                return "truncated"
        while True:  # data sub-blocks up to the zero-length one
            if position >= len(data):
                return "truncated"
            if data[position] == 0:
                position += 1
                break
            position += 1 + data[position]
        if kind == 0x2C:
            width, height = struct.unpack("<HH", data[descriptor + 5 : descriptor + 9])
            return position, width, height


def random_gif(rng: random.Random) -> bytes:
    """A GIF of random blocks before and after its first image: extensions of random sub-blocks, a
    local colour table or not, data cut into sub-blocks of one random length (as encoders do)."""
    out = [b"GIF89a", struct.pack("<HHBBB", rng.randrange(1, 300), rng.randrange(1, 300), 0x80 | rng.randrange(8), 0, 0)]
    out.append(bytes(rng.randrange(256) for _ in range(3 * (2 << (out[1][4] & 7)))))
    for _ in range(rng.randrange(4)):
        out.append(bytes([0x21, rng.randrange(256)]))
        out.extend(bytes([size]) + bytes(rng.randrange(256) for _ in range(size))
                   for size in (rng.randrange(1, 256) for _ in range(rng.randrange(3))))
        out.append(b"\x00")
    for _ in range(rng.randrange(1, 4)):
        local = rng.random() < 0.3
        flags = (0x80 | rng.randrange(8)) if local else 0
        out.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, rng.randrange(1, 300), rng.randrange(1, 300), flags))
        if local:
            out.append(bytes(rng.randrange(256) for _ in range(3 * (2 << (flags & 7)))))
        out.append(b"\x08")
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        size = rng.choice([255, 255, rng.randrange(1, 256)])
        out.extend(bytes([len(piece)]) + piece for piece in (data[i : i + size] for i in range(0, len(data), size)))
        out.append(b"\x00")
    out.append(b"\x3b")
    return b"".join(out)
