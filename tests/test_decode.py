"""The shared decoder: strict on damage, explicit about every conversion it applies."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from tests import faults
from trainwell.data.decode import Decoded, DecodeError, _decode_jpeg_direct, _decode_pillow, decode_image, resize_image


def kind_of_failure(data: bytes, suffix: str = ".jpg", **options) -> str:
    with pytest.raises(DecodeError) as error:
        decode_image(data, suffix=suffix, **options)
    return error.value.kind


def note_kinds(data: bytes, suffix: str) -> set[str]:
    return {kind for kind, _ in decode_image(data, suffix=suffix).notes}


def test_jpeg_decodes_to_rgb_uint8():
    decoded = decode_image(faults.jpeg_bytes(), suffix=".jpg")
    assert decoded.image.shape == (32, 32, 3)
    assert decoded.image.dtype == np.uint8
    assert decoded.format == "jpeg"
    assert decoded.notes == []


def test_png_is_lossless():
    array = faults.image_array(3)
    assert np.array_equal(decode_image(faults.png_bytes(3), suffix=".png").image, array)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty_file"),
        (b"hello, I am a text file\n", "not_an_image"),
        (faults.truncated_jpeg(), "truncated"),
        (faults.broken_crc_png(), "corrupt"),
        (faults.npy_with_nan(), "nan"),
    ],
    ids=["empty", "text", "truncated-jpeg", "broken-crc-png", "nan-npy"],
)
def test_damaged_files_fail_with_their_kind(data, kind):
    assert kind_of_failure(data) == kind


def test_nan_detail_counts_bad_values():
    with pytest.raises(DecodeError, match="2 of 3072 values are NaN"):
        decode_image(faults.npy_with_nan(), suffix=".npy")


def test_inf_is_reported():
    array = np.zeros((8, 8, 3), dtype=np.float64)
    array[0, 0, 0] = np.inf
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    assert kind_of_failure(buffer.getvalue(), ".npy") == "inf"


def test_decompression_bomb_is_refused_from_the_header():
    assert kind_of_failure(faults.bomb_png_header(), ".png", max_pixels=40_000_000) == "too_large"


def test_extension_mismatch_is_a_note_not_a_failure():
    decoded = decode_image(faults.png_bytes(), suffix=".jpg")
    assert ("extension_mismatch", "png content named .jpg") in decoded.notes


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"),
    [("L", "PNG", {"grayscale"}), ("RGBA", "PNG", {"alpha"}), ("CMYK", "JPEG", {"cmyk"}), ("P", "PNG", {"palette"})],
)
def test_conversions_are_recorded(mode, fmt, expected):
    image = Image.fromarray(faults.image_array()).convert(mode)
    decoded = decode_image(faults.encode(image, fmt), suffix=".png" if fmt == "PNG" else ".jpg")
    assert decoded.image.shape == (32, 32, 3)
    assert expected <= {kind for kind, _ in decoded.notes}


def test_sixteen_bit_png_is_scaled_and_recorded():
    array = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    data = faults.encode(Image.fromarray(array), "PNG")
    decoded = decode_image(data, suffix=".png")
    assert {"high_bit_depth", "grayscale"} <= {kind for kind, _ in decoded.notes}
    assert decoded.image.max() > 200  # scaled to the 8-bit range, not clipped to black/white


def test_animated_gif_uses_first_frame():
    frames = [Image.fromarray(faults.image_array(seed)).convert("P") for seed in range(3)]
    import io

    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert "animated" in note_kinds(buffer.getvalue(), ".gif")


def test_float_npy_in_unit_range_becomes_uint8():
    import io

    array = np.full((4, 4, 3), 0.5, dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert decode_image(buffer.getvalue(), suffix=".npy").image[0, 0, 0] == 128


def test_resize_to_square():
    resized = resize_image(faults.image_array(size=64), size=32)
    assert resized.shape == (32, 32, 3) and resized.dtype == np.uint8
    same = faults.image_array(size=32)
    assert resize_image(same, size=32) is same


def _verdict(decode, data: bytes) -> tuple:
    """What a decoder makes of data: its pixels, shape and notes, or the kind it refuses it as."""
    try:
        decoded = decode(data)
    except DecodeError as error:
        return (error.kind,)
    return ("decoded", decoded.image.tobytes(), decoded.image.shape, tuple(decoded.notes))


def _pillow_only(data: bytes) -> Decoded:
    return _decode_pillow(data, fmt="jpeg", max_pixels=40_000_000)


def _libjpeg_warning(data: bytes) -> str | None:
    """What libjpeg-turbo says about a JPEG in strict mode, where it says anything."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as error:
        return str(error)
    except Exception:
        return None
    return None


def _compared_with_pillow(data: bytes, label: str) -> str:
    """decode_image's verdict must be Pillow's alone, except for a file Pillow decodes although
    libjpeg-turbo warns about it: then truncated (the data ran out), corrupt (bad entropy data) or
    Pillow's very pixels with a decoder_warning note. Returns which of these it was."""
    ours = _verdict(lambda d: decode_image(d, suffix=".jpg"), data)
    pillow = _verdict(_pillow_only, data)
    if ours == pillow:
        return "as Pillow"
    warning = _libjpeg_warning(data)
    assert pillow[0] == "decoded" and warning is not None, f"{label}: {ours[0]} where Pillow says {pillow[0]}"
    if "premature end" in warning.lower():
        assert ours == ("truncated",), label
    elif "bad huffman code" in warning.lower() or "bad arithmetic code" in warning.lower():
        assert ours == ("corrupt",), label
    else:
        assert ours == (*pillow[:3], (*pillow[3], ("decoder_warning", f"libjpeg-turbo: {warning}"))), label
    return ours[0] if ours[0] != "decoded" else "decoder_warning"


def _jpeg_variants() -> list[bytes]:
    rng = np.random.default_rng(7)
    variants = []
    for height, width in ((1, 1), (17, 33), (75, 75), (120, 64)):
        colour = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        for subsampling in ("4:4:4", "4:2:2", "4:2:0"):
            for options in ({}, {"progressive": True}, {"optimize": True, "quality": 20}, {"quality": 100},
                            {"restart_marker_blocks": 2}):
                encoded = io.BytesIO()
                Image.fromarray(colour).save(encoded, "JPEG", subsampling=subsampling, **options)
                variants.append(encoded.getvalue())
        encoded = io.BytesIO()
        Image.fromarray(colour[:, :, 0]).save(encoded, "JPEG")
        variants.append(encoded.getvalue())
    return variants


def test_jpegs_take_libjpeg_turbo_directly_and_decode_as_pillow_does():
    """The direct path must give Pillow's pixels and notes exactly (build, predict and the audit all
    decode through it), and must be the path taken for ordinary files, or its speed is not had."""
    for data in _jpeg_variants():
        assert _decode_jpeg_direct(data, max_pixels=40_000_000)[0] is not None
        assert _verdict(lambda d: decode_image(d, suffix=".jpg"), data) == _verdict(_pillow_only, data)


def test_damaged_jpegs_get_pillows_verdict_unless_libjpeg_warns():
    """Truncated, bit-flipped and spliced JPEGs: refused with Pillow's kind or decoded to Pillow's
    pixels, except those Pillow decodes in spite of libjpeg-turbo's warning (it ignores them), which
    are truncated, corrupt or carry the warning (see _compared_with_pillow)."""
    rng = np.random.default_rng(11)
    variants = _jpeg_variants()
    outcomes = Counter()
    for index in range(900):
        data = bytearray(variants[index % len(variants)])
        if index % 3 == 0:
            data = data[: rng.integers(3, len(data))]
        elif index % 3 == 1:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(3, len(data))] = rng.integers(0, 256)
        else:
            cut = rng.integers(3, len(data))
            data = data[:cut] + rng.integers(0, 256, rng.integers(1, 20)).astype(np.uint8).tobytes() + data[cut:]
        outcomes[_compared_with_pillow(bytes(data), f"variant {index}")] += 1
    # Each way is met: Pillow's verdict, and each judgement of a warning it ignored.
    assert set(outcomes) == {"as Pillow", "truncated", "corrupt", "decoder_warning"}, outcomes


def _cut_scan(data: bytes) -> bytes:
    """data with its compressed scan cut in half and closed with an end-of-image marker."""
    start = data.index(b"\xff\xda")
    return data[: start + (len(data) - start) // 2] + b"\xff\xd9"


def test_a_jpeg_whose_data_ends_early_is_truncated_although_pillow_decodes_it():
    """The scan cut short but closed properly: Pillow returns an image whose lower part is grey, and
    it used to be trained on. libjpeg-turbo warns, and the file is truncated."""
    data = _cut_scan(faults.jpeg_bytes(4, size=64))
    grey_filled = _pillow_only(data).image
    assert (grey_filled[-8:] == 128).all()  # what Pillow hands over: the missing rows as flat grey
    with pytest.raises(DecodeError) as error:
        decode_image(data, suffix=".jpg")
    assert error.value.kind == "truncated" and "premature end" in error.value.detail


def test_jpegs_with_exif_take_the_direct_path_after_pillow_reads_their_header():
    """EXIF (what cameras write) is parsed by Pillow's header reader, then the pixels come from
    libjpeg-turbo directly, the same as Pillow's. A second frame (MPO) stays with Pillow's path."""
    exif = Image.Exif()
    exif[0x010F] = "trainwell camera"  # Make
    exif[0x0112] = 6  # Orientation: left as stored, as Pillow leaves it
    encoded = io.BytesIO()
    Image.fromarray(faults.image_array(6, size=48)).save(encoded, "JPEG", exif=exif.tobytes())
    data = encoded.getvalue()
    assert b"Exif" in data[:64]
    assert _decode_jpeg_direct(data, max_pixels=40_000_000)[0] is not None
    assert _verdict(lambda d: decode_image(d, suffix=".jpg"), data) == _verdict(_pillow_only, data)
    frames = io.BytesIO()
    first, second = (Image.fromarray(faults.image_array(seed, size=32)) for seed in (7, 8))
    first.save(frames, "MPO", save_all=True, append_images=[second])
    assert _decode_jpeg_direct(frames.getvalue(), max_pixels=40_000_000) == (None, None)
    assert "animated" in note_kinds(frames.getvalue(), ".jpg")


def test_unusual_jpegs_go_through_pillow_with_their_notes():
    colour = faults.image_array(5)
    encoded = io.BytesIO()
    Image.fromarray(colour).convert("CMYK").save(encoded, "JPEG")
    assert _decode_jpeg_direct(encoded.getvalue(), max_pixels=40_000_000)[0] is None
    assert note_kinds(encoded.getvalue(), ".jpg") == {"cmyk"}
    # A header past max_pixels is refused by Pillow's path, from the header, as before.
    assert kind_of_failure(faults.jpeg_bytes(), max_pixels=100) == "too_large"


def _with_header_segment(data: bytes, segment: bytes) -> bytes:
    """data with one more marker segment (or standalone marker) right after its SOI."""
    return data[:2] + segment + data[2:]


def _app(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _exif_with_x_resolution(field_type: int, count: int, value: bytes) -> bytes:
    """An EXIF APP1 payload whose IFD0 holds ResolutionUnit = 2 and an XResolution of the given type."""
    entries = [(0x0128, 3, 1, (2).to_bytes(2, "little").ljust(4, b"\0")), (0x011A, field_type, count, value.ljust(4, b"\0")[:4])]
    ifd = len(entries).to_bytes(2, "little") + b"".join(
        tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + number.to_bytes(4, "little") + field
        for tag, kind, number, field in entries) + bytes(4)
    return b"Exif\0\0II*\0\x08\0\0\0" + ifd


def test_header_segments_pillow_refuses_are_refused_as_before():
    """libjpeg skips APP segments and TEM markers that Pillow's Python header parser reads and fails on
    (a 5-byte JFIF, a 6-byte Adobe, a 13-byte ICC chunk, a Photoshop resource cut after its code, an
    EXIF XResolution of one undefined byte, a TEM marker): the file must still be refused, as before."""
    rng = np.random.default_rng(23)
    bases = [faults.jpeg_bytes(seed) for seed in range(3)] + [faults.encode(faults.image_array(3)[:, :, 0], "JPEG")]
    photoshop = b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0\0\0\0\x04abcd" + b"8BIM\x04\x04"
    segments = [_app(0xE0, (b"JFIF\0\x01\x02\x01\0H\0H\0\0")[:length]) for length in range(15)]
    segments += [_app(0xEE, (b"Adobe\0\x64\0\0\0\0" + bytes([transform]))[:length])
                 for length in range(13) for transform in (0, 1, 2)]
    segments += [_app(0xE2, (b"ICC_PROFILE\0\x01\x01abc")[:length]) for length in range(10, 18)]
    segments += [_app(0xED, photoshop[:length]) for length in range(14, len(photoshop) + 1)]
    segments += [_app(0xE1, _exif_with_x_resolution(field_type, count, bytes([72, 1, 0, 0])))
                 for field_type in (1, 2, 3, 4, 5, 7, 10) for count in (0, 1, 2)]
    segments += [b"\xff\x01", b"\xff\xd0", b"\xff\xff\xff\xe0" + b"\0\x02", b"\xff\xdc\0\x04\0\x20"]
    segments += [_app(int(rng.integers(0xE0, 0xF0)), prefix + rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8).tobytes())
                 for prefix in (b"JFIF", b"Adobe", b"ICC_PROFILE\0", b"Exif\0\0", b"Photoshop 3.0\0", b"MPF\0") for _ in range(10)]
    verdicts = set()
    for index, segment in enumerate(segments):
        data = _with_header_segment(bases[index % len(bases)], segment)
        _compared_with_pillow(data, f"segment {index} {segment[:20]!r}")
        verdicts.add(_verdict(lambda d: decode_image(d, suffix=".jpg"), data)[0])
    assert verdicts == {"decoded", "corrupt"}  # both verdicts met: Pillow refuses some of these, reads the rest


def test_subsamplings_simplejpeg_cannot_name_decode_as_before():
    """A 16x32 4:2:0 file relabelled 1x4 luma sampling (4:4:1) has the same six blocks per MCU and
    decodes cleanly, but simplejpeg raises KeyError naming its subsampling: it must go to Pillow."""
    base = faults.encode(faults.image_array(5, size=32)[:, :16], "JPEG", subsampling="4:2:0")
    start = base.index(b"\xff\xc0")
    luma_sampling = start + 2 + 2 + 6 + 1  # marker, length, precision/height/width/count, component id
    assert base[luma_sampling] == 0x22
    verdicts = {}
    for horizontal in range(1, 5):
        for vertical in range(1, 5):
            data = bytearray(base)
            data[luma_sampling] = horizontal * 16 + vertical
            _compared_with_pillow(bytes(data), f"{horizontal}x{vertical}")
            verdicts[horizontal, vertical] = _verdict(lambda d: decode_image(d, suffix=".jpg"), bytes(data))[0]
    assert verdicts[1, 4] == "decoded" and verdicts[2, 2] == "decoded"


def test_samples_of_other_than_eight_bits_are_refused_from_the_header_as_before():
    base = faults.jpeg_bytes(2)
    precision = base.index(b"\xff\xc0") + 4
    for bits in (2, 12, 16):
        data = base[:precision] + bytes([bits]) + base[precision + 1 :]
        assert _decode_jpeg_direct(data, max_pixels=40_000_000)[0] is None
        assert _verdict(lambda d: decode_image(d, suffix=".jpg"), data) == _verdict(_pillow_only, data) == ("corrupt",)


def _header_warned(data: bytes, rng: np.random.Generator) -> bytes:
    """data with a header libjpeg-turbo reads with a warning and Pillow reads silently: junk bytes before a
    segment, an Adobe segment with the unknown transform 2 instead of JFIF (colour only: libjpeg reads no
    transform for one component), or JFIF revision 2.1."""
    frame = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))  # baseline or progressive
    colour = data[frame + 9] == 3  # the frame's component count
    way = int(rng.choice([0, 1, 2] if colour else [0, 2]))
    if way == 0:
        at = data.index(b"\xff\xdb")
        return data[:at] + rng.integers(1, 255, int(rng.integers(1, 4)), dtype=np.uint8).tobytes() + data[at:]
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    if way == 1:
        return data[:2] + _app(0xEE, b"Adobe\0\x64\0\0\0\0\x02") + data[app0_end:]
    return data[:11] + b"\x02" + data[12:]  # JFIF's major version byte


def test_a_warning_libjpeg_gives_about_the_header_is_not_dropped():
    """libjpeg-turbo's header warnings stopped the direct path before its decode, and the file then got
    Pillow's verdict with no note: a scan cut short behind junk between segments was Pillow's grey-filled
    image, silently. The warning is now judged as any other: these decode to Pillow's pixels with it noted."""
    rng = np.random.default_rng(31)
    exif = Image.Exif()
    exif[0x0112] = 3
    bases = [faults.jpeg_bytes(seed, size=40) for seed in range(3)]
    bases += [faults.encode(faults.image_array(4, size=40)[:, :, 0], "JPEG"),
              faults.encode(faults.image_array(5, size=40), "JPEG", exif=exif.tobytes(), progressive=True)]
    outcomes = Counter()
    for index in range(60):
        data = _header_warned(bases[index % len(bases)], rng)
        if index % 2:
            data = _cut_scan(data)
        warning = _libjpeg_warning(data)
        assert warning is not None and _verdict(_pillow_only, data)[0] == "decoded", index
        ours = _verdict(lambda d: decode_image(d, suffix=".jpg"), data)
        assert ours[0] == "decoded" and ("decoder_warning", f"libjpeg-turbo: {warning}") in ours[3], f"variant {index}: {ours[0]} ({warning})"
        outcomes[_compared_with_pillow(data, f"variant {index}")] += 1
    assert outcomes == {"decoder_warning": 60}


def test_a_misnumbered_icc_chunk_is_a_note_not_corrupt_pixels():
    """"Corrupt JPEG data: bad ICC marker" is libjpeg-turbo on an ICC chunk's sequence numbers, not on the
    image data: the file decodes to Pillow's pixels with the warning noted, never refused as corrupt."""
    profile = b"\0" * 128 + b"trainwell test profile"
    base = faults.encode(faults.image_array(6, size=40), "JPEG", icc_profile=profile)
    chunk = base.index(b"ICC_PROFILE\0") + 12  # sequence number, then chunk count
    for sequence, count in ((0, 1), (2, 1), (1, 0), (0, 0), (3, 2)):
        data = base[:chunk] + bytes([sequence, count]) + base[chunk + 2 :]
        assert "bad ICC marker" in str(_libjpeg_warning(data))
        ours = _verdict(lambda d: decode_image(d, suffix=".jpg"), data)
        assert ours[0] == "decoded" and ours[1:3] == _verdict(_pillow_only, data)[1:3], (sequence, count)
        assert _compared_with_pillow(data, f"icc {sequence}/{count}") == "decoder_warning"
