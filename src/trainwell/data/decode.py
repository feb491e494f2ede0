"""The one image decoder: the audit judges files with it and the build stage caches what it returns."""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

# We enforce our own pixel limit (audit.max_pixels) from the header, before decoding;
# Pillow's built-in guard would raise a warning-or-error pair with a different threshold.
Image.MAX_IMAGE_PIXELS = None

# Magic numbers -> format name. Sniffing the bytes (not trusting the extension) is what
# lets the audit report "PNG bytes named .jpg" instead of a confusing decode error.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x93NUMPY", "npy"),
)
_EXTENSION_FORMATS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".gif": "gif",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
    ".npy": "npy",
}


# What a decode may allocate per pixel of audit.max_pixels: four float32 samples (RGBA float).
# A header promising more (600 float64 samples a pixel, a 1e9-element .npy) is refused unread.
MAX_BYTES_PER_PIXEL = 16


def max_file_bytes(max_pixels: int) -> int:
    """The largest file that can hold an image within max_pixels: every pixel stored uncompressed at
    MAX_BYTES_PER_PIXEL, plus 1 MiB of headers and metadata. Anything bigger is refused unread."""
    return max_pixels * MAX_BYTES_PER_PIXEL + (1 << 20)


class DecodeError(Exception):
    """A file that cannot become a training image; `kind` is the audit's name for the reason."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class Decoded:
    """An RGB uint8 image plus the conversions that were applied to get it."""

    image: np.ndarray  # (height, width, 3) uint8
    format: str
    # (kind, detail) pairs such as ("grayscale", "mode L expanded to RGB"): not errors,
    # but the audit reports them because the model sees something other than the file.
    notes: list[tuple[str, str]] = field(default_factory=list)


def sniff_format(data: bytes) -> str | None:
    """Name the image format from its leading bytes, or None when no known format matches."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def format_for_extension(suffix: str) -> str | None:
    """The format a file extension promises, or None for an extension we do not know."""
    return _EXTENSION_FORMATS.get(suffix.lower())


def _finite_or_raise(array: np.ndarray) -> None:
    if np.issubdtype(array.dtype, np.floating):
        nan_count = int(np.isnan(array).sum())
        if nan_count:
            raise DecodeError("nan", f"{nan_count} of {array.size} values are NaN")
        inf_count = int(np.isinf(array).sum())
        if inf_count:
            raise DecodeError("inf", f"{inf_count} of {array.size} values are infinite")


def _to_rgb_uint8(array: np.ndarray, notes: list[tuple[str, str]]) -> np.ndarray:
    """Bring a decoded array to (H, W, 3) uint8, recording every conversion made."""
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and 0 not in array.shape:
        return np.ascontiguousarray(array)  # already RGB uint8, as most files are: nothing to convert
    # Only numbers are pixels: dates, strings, bytes, records and complex values are not.
    if array.dtype.kind not in "biuf":
        raise DecodeError("not_an_image", f"values of type {array.dtype} are not pixel data")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or 0 in array.shape:
        raise DecodeError("not_an_image", f"array of shape {array.shape} is not an image (need H x W [x C], none 0)")
    if np.issubdtype(array.dtype, np.floating):
        _finite_or_raise(array)
        # Float images are taken as intensities in [0, 1]; values outside are clipped.
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)  # clipped first: no overflow
    elif array.dtype == np.uint16 or array.dtype == np.int32 or array.dtype == np.uint32:
        notes.append(("high_bit_depth", f"{array.dtype} reduced to 8 bits"))
        maximum = 65535 if array.dtype == np.uint16 else max(int(array.max()), 1)
        array = (array.astype(np.float64) * (255.0 / maximum)).round().clip(0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    channels = array.shape[2]
    if channels == 1:
        notes.append(("grayscale", "single channel repeated to RGB"))
        array = np.repeat(array, 3, axis=2)
    elif channels == 2:
        notes.append(("grayscale", "grayscale with alpha: alpha dropped, channel repeated to RGB"))
        notes.append(("alpha", "alpha channel dropped"))
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif channels == 4:
        notes.append(("alpha", "alpha channel dropped"))
        array = array[:, :, :3]
    elif channels != 3:
        raise DecodeError("not_an_image", f"{channels} channels; expected 1, 2, 3 or 4")
    return np.ascontiguousarray(array)


def _npy_header(data: bytes) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read without touching (or allocating) the array."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except Exception as exc:  # numpy raises ValueError for damaged headers
        raise DecodeError("corrupt", f"numpy header could not be read: {exc}") from None
    return tuple(shape), dtype


def _decode_npy(data: bytes, *, max_pixels: int) -> Decoded:
    notes: list[tuple[str, str]] = []
    shape, dtype = _npy_header(data)
    # numpy allocates the whole array before reading it: bound what the header asks for first.
    pixels = int(np.prod(shape[:2], dtype=np.float64)) if len(shape) >= 2 else 0
    needed = float(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if pixels > max_pixels or needed > max_pixels * MAX_BYTES_PER_PIXEL:
        raise DecodeError("too_large", f"array of shape {shape} and type {dtype} would take {needed / 2**20:.0f} MiB; "
                          f"the limit is {max_pixels} pixels of at most {MAX_BYTES_PER_PIXEL} bytes")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/EOFError/OSError for damaged headers
        raise DecodeError("corrupt", f"numpy array could not be read: {exc}") from None
    return Decoded(image=_to_rgb_uint8(array, notes), format="npy", notes=notes)


def _check_png_chunks(data: bytes) -> None:
    """Verify every PNG chunk's CRC-32: Pillow skips the check for image data, and a flipped
    bit in IDAT would otherwise decode to silently wrong pixels."""
    position = 8
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        end = position + 8 + length
        if end + 4 > len(data):
            raise DecodeError("truncated", f"png chunk {kind!r} at byte {position} runs past the end of the file")
        stored = int.from_bytes(data[end : end + 4], "big")
        if zlib.crc32(data[position + 4 : end]) & 0xFFFFFFFF != stored:
            raise DecodeError("corrupt", f"png chunk {kind.decode('latin-1')} at byte {position} fails its CRC check")
        if kind == b"IEND":
            return
        position = end + 4
    raise DecodeError("truncated", "png ends before its IEND chunk")


def _decode_pillow(data: bytes, *, fmt: str, max_pixels: int) -> Decoded:
    notes: list[tuple[str, str]] = []
    if fmt == "png":
        _check_png_chunks(data)
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("corrupt", f"{fmt} header is not readable") from None
    except Exception as exc:
        raise DecodeError("corrupt", f"{fmt} header is not readable: {exc}") from None
    width, height = image.size
    # Checked on the header alone so a decompression bomb never allocates its pixels.
    if width * height > max_pixels:
        raise DecodeError("too_large", f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(("animated", f"{frames} frames; only the first is used"))
    mode = image.mode
    try:
        image.load()
    except OSError as exc:
        message = str(exc)
        kind = "truncated" if "truncated" in message.lower() else "corrupt"
        raise DecodeError(kind, f"{fmt} could not be decoded in full: {message}") from None
    except Exception as exc:  # Pillow raises SyntaxError/ValueError for broken chunks
        raise DecodeError("corrupt", f"{fmt} could not be decoded: {exc}") from None
    if mode == "P":
        notes.append(("palette", "palette image expanded to RGB"))
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "CMYK":
        notes.append(("cmyk", "CMYK converted to RGB"))
        image = image.convert("RGB")
    elif mode in ("1", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA"):
        image = image.convert("RGB")
    elif mode == "I;16" or mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.uint16)
        return Decoded(image=_to_rgb_uint8(array, notes), format=fmt, notes=notes)
    elif mode == "I":
        array = np.asarray(image, dtype=np.int32)
        return Decoded(image=_to_rgb_uint8(array, notes), format=fmt, notes=notes)
    if image.mode == "RGB":  # the bytes as numpy would copy them, without the array-interface detour
        pixels: np.ndarray = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(height, width, 3)
    else:
        pixels = np.asarray(image)
    return Decoded(image=_to_rgb_uint8(pixels, notes), format=fmt, notes=notes)


# Markers a plain header holds before its first scan: SOF0/1/2, their arithmetic forms SOF9/10, DHT,
# DAC, DQT, DRI, APP0-15 and COM. Anything else there (TEM, RST, DNL, lossless SOF3, fill bytes,
# junk between segments) is left to Pillow: its Python marker parser refuses some that libjpeg reads.
_PLAIN_HEADER_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC4, 0xC9, 0xCA, 0xCC, 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE})
# Segment payloads Pillow's parser reads itself, with the least length it reads without raising (None:
# always Pillow's). libjpeg skips them all, so a 5-byte "JFIF", an Adobe segment under 7 bytes, an ICC
# chunk under 14, an EXIF resolution of the wrong type, a Photoshop resource cut after its code or an
# MPO index would decode here where Pillow refuses them or counts frames.
_PILLOW_PARSED_PAYLOADS: tuple[tuple[bytes, int | None], ...] = (
    (b"JFIF", 7), (b"Adobe", 7), (b"ICC_PROFILE\0", 14), (b"Exif\0\0", None), (b"Photoshop 3.0\0", None), (b"MPF\0", None))


def _plain_jpeg_header(data: bytes) -> bool:
    """True when the segments up to the first scan are ones Pillow's parser and libjpeg read alike."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:
            return True
        length = int.from_bytes(data[position + 2 : position + 4], "big")  # bytes, counting these two
        if marker not in _PLAIN_HEADER_MARKERS or length < 2:
            return False
        if marker in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA) and data[position + 4 : position + 5] != b"\x08":
            return False  # 12- and 16-bit samples: Pillow refuses them from the header, say so there
        if marker >= 0xE0:
            for prefix, least_length in _PILLOW_PARSED_PAYLOADS:
                if data.startswith(prefix, position + 4) and (least_length is None or length - 2 < least_length):
                    return False
        position += 2 + length
    return False


def _decode_jpeg_direct(data: bytes, *, max_pixels: int) -> tuple[Decoded | None, str | None]:
    """A JPEG (YCbCr or grey, one frame) straight through libjpeg-turbo, or (None, ...) for Pillow;
    with libjpeg-turbo's warning about the file, if it gave one (see _judge_jpeg_warning).

    Pillow's JPEG path parses the markers in Python before libjpeg-turbo decodes: ~130 us for a
    75x75 file against ~50 us here, a third of an audit's per-file time. The pixels are the same
    (libjpeg-turbo's accurate integer DCT and smooth upsampling in both; tests compare them across
    subsamplings, progressive and restart-marker files). A header with segments Pillow's parser
    reads itself (EXIF, ICC, Adobe, MPF, ...) is first opened by Pillow, which parses it and decodes
    nothing, so its header verdict stands. `strict` turns every libjpeg warning (truncation, corrupt
    entropy data, extraneous bytes) into an error: the file then goes to Pillow, as does anything
    unusual (CMYK, Adobe RGB, several frames, a subsampling simplejpeg cannot name, a header past
    max_pixels).
    """
    if not _plain_jpeg_header(data) and not _pillow_reads_header(data):
        return None, None
    try:  # simplejpeg raises KeyError for a subsampling it has no name for (4:4:1)
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:  # a warning in the header (junk between segments, an Adobe transform of 2)
        # is libjpeg's word on the file too: judged if Pillow decodes it, or a scan cut short behind
        # such a header would be Pillow's grey-filled image with no note at all.
        return None, (str(exc) if _header_readable(data) else None)
    except Exception:
        return None, None
    if colorspace not in ("YCbCr", "Gray") or width * height > max_pixels or width * height == 0:
        return None, None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if colorspace == "Gray" else "RGB",
                                        fastdct=False, fastupsample=False, strict=True)
    except ValueError as exc:  # libjpeg-turbo's error, or its warning made one by strict
        return None, str(exc)
    except Exception:
        return None, None
    if pixels.shape[:2] != (height, width):  # never a scaled-down decode
        return None, None
    notes: list[tuple[str, str]] = []
    return Decoded(image=_to_rgb_uint8(pixels[:, :, 0] if colorspace == "Gray" else pixels, notes),
                   format="jpeg", notes=notes), None


def _header_readable(data: bytes) -> bool:
    """libjpeg-turbo reads the header when its warnings are not errors: what it raised was a warning."""
    try:
        simplejpeg.decode_jpeg_header(data, strict=False)
    except Exception:
        return False
    return True


def _pillow_reads_header(data: bytes) -> bool:
    """Pillow opens the JPEG (parsing its markers up to the scan, decoding nothing) as one plain frame."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "MPO"]) as opened:
            return opened.format == "JPEG" and opened.mode in ("RGB", "L") and getattr(opened, "n_frames", 1) == 1
    except Exception:  # its verdict is given when it decodes the file itself
        return False


def _judge_jpeg_warning(message: str, decoded: Decoded) -> None:
    """What libjpeg-turbo's warning about a JPEG that Pillow decoded regardless means for it.

    Pillow ignores libjpeg's warnings, so such a file used to be trained on as decoded. Where the
    warning says the compressed data ran out or is damaged, part of the image is grey or garbage
    (in generated damaged files the pixels were 10-30 levels off on average): truncated or
    corrupt. Any other warning (extraneous bytes between segments, an unknown JFIF revision)
    is a decoder_warning note: often harmless, reported so it can be looked at.
    """
    lowered = message.lower()
    if "premature end" in lowered:
        raise DecodeError("truncated", f"jpeg data ends before the image does (libjpeg-turbo: {message}); the rest "
                          "would be decoded grey")
    # Only the entropy decoders' complaints: "Corrupt JPEG data: bad ICC marker" is about metadata.
    if "bad huffman code" in lowered or "bad arithmetic code" in lowered:
        raise DecodeError("corrupt", f"jpeg data is damaged (libjpeg-turbo: {message}); part of the image would be "
                          "decoded as garbage")
    decoded.notes.append(("decoder_warning", f"libjpeg-turbo: {message}"))


def _tensorflow_io_tiff(data: bytes, *, samples: int = 4) -> np.ndarray:
    """libtiff through tensorflow-io: compressions tifffile needs imagecodecs for (LZW, JPEG, ...).

    libtiff hands every image over as RGBA; the channels the file does not have are dropped
    again, so an RGB file is not reported as carrying alpha."""
    import tensorflow as tf
    import tensorflow_io as tfio

    try:
        rgba = tfio.experimental.image.decode_tiff(data).numpy()
        return {1: rgba[..., :1], 2: rgba[..., [0, 3]], 3: rgba[..., :3]}.get(samples, rgba)
    except tf.errors.OpError as exc:
        raise DecodeError("corrupt", f"tiff could not be decoded: {exc.message.splitlines()[0]}") from None


def _decode_tiff(data: bytes, *, max_pixels: int) -> Decoded:
    """TIFF samples as stored: float (NaN/Inf checked), 16-bit, grey or RGB(A).

    tifffile reads what Pillow cannot (RGB float) or narrows silently (16-bit RGB to 8 bits);
    palette, CMYK and other colour models go through Pillow's conversions; compressions
    tifffile cannot decode without imagecodecs go through tensorflow-io's libtiff decoder.
    """
    import tifffile

    notes: list[tuple[str, str]] = []
    try:
        tiff = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct errors for bad headers
        raise DecodeError("corrupt", f"tiff header is not readable: {exc}") from None
    with tiff:
        page = tiff.pages.first
        width, height = page.imagewidth, page.imagelength
        # Checked on the header alone so a decompression bomb never allocates its pixels: the
        # pixel count, and the bytes the first page decodes to (samples x bytes per sample).
        if width * height > max_pixels:
            raise DecodeError("too_large", f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
        needed = float(np.prod(page.shape, dtype=np.float64)) * np.dtype(page.dtype or np.uint8).itemsize
        if needed > max_pixels * MAX_BYTES_PER_PIXEL:
            raise DecodeError("too_large", f"{width}x{height} with {page.samplesperpixel} samples of "
                              f"{page.bitspersample} bits per pixel would take {needed / 2**20:.0f} MiB to decode; the "
                              f"limit is {max_pixels} pixels of at most {MAX_BYTES_PER_PIXEL} bytes")
        if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
            return _decode_pillow(data, fmt="tiff", max_pixels=max_pixels)
        if len(tiff.pages) > 1:
            notes.append(("animated", f"{len(tiff.pages)} pages; only the first is used"))
        try:
            array = page.asarray()
        except Exception as exc:  # short strips, broken compressed data, or a codec tifffile lacks
            message = str(exc)
            if "imagecodecs" in message:  # "<COMPRESSION.LZW: 5> requires the 'imagecodecs' package"
                array = _tensorflow_io_tiff(data, samples=page.samplesperpixel)
                return Decoded(image=_to_rgb_uint8(array, notes), format="tiff", notes=notes)
            needed = max((offset + count for offset, count in zip(page.dataoffsets, page.databytecounts)), default=0)
            kind = "truncated" if len(data) < needed else "corrupt"
            raise DecodeError(kind, f"tiff could not be decoded in full: {message}") from None
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage
    return Decoded(image=_to_rgb_uint8(array, notes), format="tiff", notes=notes)


def decode_image(data: bytes, *, suffix: str = "", max_pixels: int = 40_000_000) -> Decoded:
    """Decode a whole file's bytes to RGB uint8, or raise DecodeError with the audit kind.

    The decode is complete and strict: a truncated JPEG is an error, never grey-filled.
    """
    if not data:
        raise DecodeError("empty_file", "file has 0 bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise DecodeError("not_an_image", "content matches no supported image format")
    try:
        if fmt == "npy":
            decoded = _decode_npy(data, max_pixels=max_pixels)
        elif fmt == "tiff":
            decoded = _decode_tiff(data, max_pixels=max_pixels)
        elif fmt == "jpeg":
            direct, warning = _decode_jpeg_direct(data, max_pixels=max_pixels)
            decoded = direct or _decode_pillow(data, fmt=fmt, max_pixels=max_pixels)
            if warning is not None:  # Pillow decoded what libjpeg-turbo warned about
                _judge_jpeg_warning(warning, decoded)
        else:
            decoded = _decode_pillow(data, fmt=fmt, max_pixels=max_pixels)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError("too_large", f"{fmt} needs more memory to decode than is available") from None
    except Exception as exc:  # one bad file is a finding, whatever a decoder library raises for it
        raise DecodeError("corrupt", f"{fmt} could not be decoded: {type(exc).__name__}: {str(exc)[:200]}") from None
    expected = format_for_extension(suffix) if suffix else None
    if expected is not None and expected != fmt:
        decoded.notes.append(("extension_mismatch", f"{fmt} content named {suffix}"))
    return decoded


def prepare_image(data: bytes, *, suffix: str, size: int, max_pixels: int) -> np.ndarray:
    """A file's bytes as the model sees them: decoded, converted to RGB uint8, resized to size x size.

    The one path from bytes to pixels: `build` caches what it returns and `trainwell predict`
    feeds it to the model, so training and serving cannot see different pixels. Raises
    DecodeError (with the audit's kind) for a file that cannot become an image.
    """
    return prepare_image_and_side(data, suffix=suffix, size=size, max_pixels=max_pixels)[0]


def prepare_image_and_side(data: bytes, *, suffix: str, size: int, max_pixels: int) -> tuple[np.ndarray, int]:
    """prepare_image's pixels and the decoded image's longer side before resizing (pixels): how much
    detail the file really holds, which `build` records for the label review's fold models."""
    image = decode_image(data, suffix=suffix, max_pixels=max_pixels).image
    return resize_image(image, size=size), int(max(image.shape[:2]))


def resize_image(image: np.ndarray, *, size: int) -> np.ndarray:
    """Resize to size x size with area averaging (the right filter for shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BOX if min(image.shape[:2]) > size else Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
