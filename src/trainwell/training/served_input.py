"""What one request to the served model may ask of TensorFlow's decoders, read from the headers with TF ops before anything is decoded.

The bytes signature runs inside TF Serving as much as in Python, so every check here is a graph
op: no Python runs per request. A refused request fails whole with InvalidArgumentError (gRPC
INVALID_ARGUMENT, HTTP 400 in TF Serving's REST API) whose message names the image and the limit:
the caller gets an error it can see, never probabilities for an image that was not classified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from trainwell.training.served_limits import ServedLimits

# Format codes, decided from the leading bytes exactly as TensorFlow's DecodeImage decides them.
UNKNOWN, JPEG, PNG, GIF, BMP = 0, 1, 2, 3, 4
HEADER_BYTES = 32  # every field read below lies in a file's first 32 bytes

# The GIF walk reads the file GIF_WINDOW bytes at a time and takes at most MAX_GIF_STEPS steps:
# one per block, or per run of equal-length data sub-blocks within a window (encoders write runs
# of 255-byte sub-blocks, so a 30 MB first image takes about 500 steps); sub-blocks of ever-changing
# lengths, which no encoder writes, would make the walk one step per block, and are refused.
GIF_WINDOW = 1 << 18
GIF_RUN = 4096  # sub-blocks looked at in one step, at most
MAX_GIF_STEPS = 1024
# Where a walk is: at the start of a block, or at the length byte of a data sub-block of an
# extension or of the first image. How it ended: still walking, done, or why not.
_BLOCK, _EXTENSION_DATA, _IMAGE_DATA = 0, 1, 2
WALKING, DONE, BAD_BLOCK, NO_IMAGE, TRUNCATED, TOO_MANY_STEPS = 0, 1, 2, 3, 4, 5


def _int(value: int) -> tf.Tensor:
    return tf.constant(value, tf.int64)


@dataclass(frozen=True)
class Checked:
    """A request that passed every limit: the bytes, and for a GIF where its first image ends."""

    image_bytes: tf.Tensor  # [N] string, available only after the checks ran
    gif_first_image_end: tf.Tensor  # [N] int64; 0 for other formats


def _header(image_bytes: tf.Tensor) -> tf.Tensor:
    """[N, 32] int64: each image's first 32 bytes, zero-padded."""
    head = tf.strings.substr(image_bytes, 0, HEADER_BYTES)
    return tf.cast(tf.io.decode_raw(head, tf.uint8, fixed_length=HEADER_BYTES), tf.int64)


def _starts_with(head: tf.Tensor, magic: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.equal(head[:, : len(magic)], tf.constant(list(magic), tf.int64)), axis=1)


def _number(head: tf.Tensor, start: int, size: int, *, big_endian: bool) -> tf.Tensor:
    """An unsigned integer of `size` bytes at `start` of each header."""
    order = range(size) if big_endian else reversed(range(size))
    value = tf.zeros_like(head[:, 0])
    for offset in order:
        value = value * 256 + head[:, start + offset]
    return value


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def formats(head: tf.Tensor) -> tf.Tensor:
    """[N] int32 format code, by TensorFlow's own magic numbers (JPEG's first three bytes, PNG's
    eight, GIF8, BM); WebP and JPEG XL, which newer TensorFlow decodes, are UNKNOWN here: their
    headers are not read, so they are refused rather than decoded unbounded."""
    code = tf.fill(tf.shape(head[:, 0]), UNKNOWN)
    for magic, value in ((b"BM", BMP), (b"GIF8", GIF), (b"\x89PNG\r\n\x1a\n", PNG), (b"\xff\xd8\xff", JPEG)):
        code = tf.where(_starts_with(head, magic), value, code)
    return code


def _jpeg_scans(image_bytes: tf.Tensor, limit: int) -> tf.Tensor:
    """[N] start-of-scan markers (FF DA) in each file, counted up to limit + 1, all files at once.

    Entropy-coded data stuffs every FF byte, so FF DA there is always a marker; metadata (an EXIF
    thumbnail) can add a few, which only makes the count cautious. The split stops after limit + 1
    markers: 32 MB of FF DA would otherwise become 16 million strings (32 bytes each) in memory.
    """
    return tf.strings.split(image_bytes, sep=b"\xff\xda", maxsplit=limit + 1).row_lengths() - 1


def _for_each(image_bytes: tf.Tensor, selected: tf.Tensor, read: Callable[[tf.Tensor], tf.Tensor], width: int
              ) -> tf.Tensor:
    """[N, width] int64: `read` applied to each selected image, one at a time; zeros for the rest."""
    positions = tf.where(selected)
    values = tf.map_fn(read, tf.gather_nd(image_bytes, positions), fn_output_signature=tf.TensorSpec([width], tf.int64))
    return tf.scatter_nd(positions, values, tf.stack([tf.size(image_bytes, out_type=tf.int64), width]))


def _gif_step(data: tf.Tensor, size: tf.Tensor, position: tf.Tensor, where: tf.Tensor
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One step of the walk from `position` in state `where`: (next position, next state, status)."""
    start = tf.minimum(position, size)
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(data, start, 16), tf.uint8, fixed_length=16), tf.int64)
    available = tf.clip_by_value(size - position, 0, GIF_WINDOW)
    first = head[0]
    # A block: an extension (introducer, label, sub-blocks), an image (descriptor of 10 bytes, local
    # colour table, LZW code size, sub-blocks), the trailer, or anything else.
    colour_table = tf.where(head[9] >= 0x80, 3 * tf.bitwise.left_shift(_int(2), head[9] % 8), _int(0))
    image_data = 11 + colour_table
    block_position = tf.where(tf.equal(first, 0x21), position + 2, position + image_data)
    block_state = tf.where(tf.equal(first, 0x21), _int(_EXTENSION_DATA), _int(_IMAGE_DATA))
    block_status = tf.where(tf.equal(first, 0x21), _int(WALKING),
                   tf.where(tf.equal(first, 0x2C), tf.where(image_data <= available, _int(WALKING), _int(TRUNCATED)),
                   tf.where(tf.equal(first, 0x3B), _int(NO_IMAGE), _int(BAD_BLOCK))))
    # Data sub-blocks: every sub-block of the first one's length are skipped in one step.
    stride = first + 1
    span = tf.minimum(tf.minimum(size - start, GIF_RUN * stride), GIF_WINDOW)
    window = tf.io.decode_raw(tf.strings.substr(data, start, span), tf.uint8)
    lengths = tf.gather(window, tf.range(0, span, stride, dtype=tf.int64))
    run = tf.reduce_sum(tf.math.cumprod(tf.cast(tf.equal(tf.cast(lengths, tf.int64), first), tf.int64)))
    data_position = tf.where(tf.equal(first, 0), position + 1, position + run * stride)
    data_state = tf.where(tf.equal(first, 0), _int(_BLOCK), where)
    data_status = tf.where(tf.logical_and(tf.equal(first, 0), tf.equal(where, _IMAGE_DATA)), _int(DONE), _int(WALKING))
    at_block = tf.equal(where, _BLOCK)
    status = tf.where(available <= 0, _int(TRUNCATED), tf.where(at_block, block_status, data_status))
    return tf.where(at_block, block_position, data_position), tf.where(at_block, block_state, data_state), status


def gif_first_image(data: tf.Tensor) -> tf.Tensor:
    """[end, width, height, status] of one GIF's first image: where its data ends (what follows is
    never decoded), its declared size, and DONE or why the walk stopped short of its end.

    TensorFlow's GIF decoder (giflib's DGifSlurp) decodes and keeps every frame before returning
    the first; cut after the first image, a 100-frame GIF costs one frame.
    """
    size = tf.cast(tf.strings.length(data), tf.int64)
    head = _header(data[tf.newaxis])[0]
    colour_table = tf.where(head[10] >= 0x80, 3 * tf.bitwise.left_shift(_int(2), head[10] % 8), _int(0))

    def step(position, where, descriptor, status, steps):
        descriptor = tf.where(tf.logical_and(tf.equal(where, _BLOCK), tf.equal(
            tf.strings.substr(data, tf.minimum(position, size), 1), b"\x2c")), position, descriptor)
        position, where, status = _gif_step(data, size, position, where)
        status = tf.where(tf.logical_and(tf.equal(status, WALKING), steps + 1 >= MAX_GIF_STEPS),
                          _int(TOO_MANY_STEPS), status)
        return position, where, descriptor, status, steps + 1

    end, _, descriptor, status, _ = tf.while_loop(
        lambda position, where, descriptor, status, steps: tf.equal(status, WALKING), step,
        [13 + colour_table, _int(_BLOCK), _int(-1), _int(WALKING), _int(0)])
    fields = tf.cast(tf.io.decode_raw(tf.strings.substr(data, tf.clip_by_value(descriptor, 0, size), 10), tf.uint8,
                                      fixed_length=10), tf.int64)
    return tf.stack([end, fields[5] + 256 * fields[6], fields[7] + 256 * fields[8], status])


def _deep_facts(image_bytes: tf.Tensor, code: tf.Tensor, limits: ServedLimits) -> tf.Tensor:
    """[N, 5]: width, height, scans, first image end, walk status; what the first 32 bytes cannot
    say: a JPEG's frame header as libjpeg reads it (tf.io.extract_jpeg_shape, which stops at the
    first scan) and its scans, a GIF's first image. Zeros for other formats."""
    jpeg_shape = _for_each(image_bytes, tf.equal(code, JPEG),
                           lambda data: tf.cast(tf.io.extract_jpeg_shape(data), tf.int64), 3)
    gif_walk = _for_each(image_bytes, tf.equal(code, GIF), gif_first_image, 4)
    scans = tf.where(tf.equal(code, JPEG), _jpeg_scans(image_bytes, limits.max_jpeg_scans), _int(0))
    return tf.stack([jpeg_shape[:, 1] + gif_walk[:, 1], jpeg_shape[:, 0] + gif_walk[:, 2], scans, gif_walk[:, 0],
                     gif_walk[:, 3]], axis=1)


def _text(value: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(value)


_GIF_PROBLEMS = {
    BAD_BLOCK: "a GIF with a byte that starts no block before its first image ends",
    NO_IMAGE: "a GIF without an image",
    TRUNCATED: "a GIF that ends before its first image does",
    TOO_MANY_STEPS: f"a GIF whose blocks up to its first image's end take more than {MAX_GIF_STEPS} steps to "
                    "read (data sub-blocks of ever-changing lengths; encoders write 255-byte ones)",
}


def _dimensions(code: tf.Tensor, head: tf.Tensor, facts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[N] width and height a decoder allocates for: PNG's IHDR, BMP's info header, JPEG's frame
    header, and for a GIF the larger of its logical screen (the output) and its first image."""
    is_png, is_bmp, is_gif = (tf.equal(code, value) for value in (PNG, BMP, GIF))
    width = tf.where(is_png, _number(head, 16, 4, big_endian=True),
            tf.where(is_bmp, _signed32(_number(head, 18, 4, big_endian=False)), facts[:, 0]))
    height = tf.where(is_png, _number(head, 20, 4, big_endian=True),
             tf.where(is_bmp, tf.abs(_signed32(_number(head, 22, 4, big_endian=False))), facts[:, 1]))
    screen_width, screen_height = _number(head, 6, 2, big_endian=False), _number(head, 8, 2, big_endian=False)
    screen_larger = tf.logical_and(is_gif, screen_width * screen_height > width * height)
    return tf.where(screen_larger, screen_width, width), tf.where(screen_larger, screen_height, height)


def _reasons(limits: ServedLimits, *, size: tf.Tensor, code: tf.Tensor, head: tf.Tensor, facts: tf.Tensor
             ) -> tf.Tensor:
    """[N] string: why each image is refused, or "" for one within every limit. The first reason
    that applies, in this order: bytes, format, header, GIF structure, pixels, JPEG scans."""
    width, height = _dimensions(code, head, facts)
    pixels = tf.maximum(width, 0) * tf.maximum(height, 0)
    scans = facts[:, 2]
    reason = tf.where(scans > limits.max_jpeg_scans, f"more than {limits.max_jpeg_scans} JPEG scans, the limit (a "
                      "progressive colour JPEG has about 10, and each scan is a pass over the whole image)", "")
    reason = tf.where(pixels > limits.max_pixels, tf.strings.join(
        [_text(width), "x", _text(height), " = ", _text(pixels),
         f" pixels, more than the limit of {limits.max_pixels} (audit.max_pixels)"]), reason)
    for status, problem in _GIF_PROBLEMS.items():
        reason = tf.where(tf.logical_and(tf.equal(code, GIF), tf.equal(facts[:, 4], status)), problem, reason)
    reason = tf.where(tf.logical_and(tf.equal(code, PNG), tf.logical_not(_starts_with(head[:, 12:], b"IHDR"))),
                      "a PNG whose first chunk is not its header (IHDR)", reason)
    reason = tf.where(tf.equal(code, UNKNOWN), "not a JPEG, PNG, GIF or BMP file (judged by its first bytes)", reason)
    return tf.where(size > limits.max_image_bytes, tf.strings.join(
        [_text(size), f" bytes, more than the limit of {limits.max_image_bytes} (export.max_image_bytes)"]), reason)


# Refused images named in one error message, at most.
NAMED_REFUSALS = 3


def check_request(image_bytes: tf.Tensor, limits: ServedLimits) -> Checked:
    """Read every image's headers (and a GIF's blocks up to its first image's end, a JPEG's scan
    markers) and fail the whole request, before anything is decoded, if one is past a limit."""
    size = tf.cast(tf.strings.length(image_bytes), tf.int64)
    head = _header(image_bytes)
    code = formats(head)
    # The deeper reads cost time in proportion to the bytes: only for images within the byte limit.
    deep = tf.where(size <= limits.max_image_bytes, code, UNKNOWN)
    facts = _deep_facts(image_bytes, deep, limits)
    reasons = _reasons(limits, size=size, code=code, head=head, facts=facts)
    refused = tf.not_equal(reasons, "")
    positions = tf.where(refused)[:, 0]
    named = tf.strings.join(["image ", _text(positions), " of the request: ", tf.gather(reasons, positions)])
    message = tf.strings.join([
        "trainwell: the request was refused and nothing was classified: ",
        _text(tf.size(positions)), " of ", _text(tf.size(image_bytes)), " images past the limits of the served model; ",
        tf.strings.reduce_join(named[:NAMED_REFUSALS], separator="; ")])
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(refused)), [message], summarize=1)
    with tf.control_dependencies([check]):
        return Checked(image_bytes=tf.identity(image_bytes),
                       gif_first_image_end=tf.where(tf.equal(code, GIF), facts[:, 3], _int(0)))
