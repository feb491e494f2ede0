"""Crops of a few percent are near-duplicates (crop hashes beside pHash, a crop-tolerant confirmation); look-alikes still are not."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests import faults
from trainwell.audit import hamming
from trainwell.audit.cache import FORMAT
from trainwell.audit.candidates import crop_pairs
from trainwell.audit.close_look import CloseLook, native_patch
from trainwell.audit.dataset import audit_dataset
from trainwell.audit.hamming import cross_pairs, popcount
from trainwell.audit.near_duplicates import Confirm, near_duplicate_groups, near_duplicate_pairs
from trainwell.audit.similarity import (
    crop_hashes,
    crop_tolerant_similarities,
    grey_of,
    similarity_features,
    tiny_thumbnail,
)
from trainwell.params import AuditParams, DataParams

POLICY = AuditParams()
CONFIRM = Confirm(min_similarity=POLICY.near_duplicate_similarity,
                  max_colour_difference=POLICY.near_duplicate_pixel_difference,
                  min_crop_similarity=POLICY.near_duplicate_crop_similarity)


def texture(rng: np.random.Generator, side: int = 64) -> np.ndarray:
    """A photograph-like RGB picture: brightness from noise blurred at a few scales (edges and
    smooth parts), colour varying slowly over it, as a photograph's does."""
    def smooth(sigma: float, channels: int) -> np.ndarray:
        layer = cv2.GaussianBlur(rng.normal(0, 1, size=(side, side, channels)).astype(np.float32), (0, 0), sigma)
        return layer.reshape(side, side, channels) / max(1e-6, float(layer.std()))

    brightness = smooth(3.0, 1) + smooth(6.0, 1) + smooth(12.0, 1)
    picture = 128 + brightness / brightness.std() * 45 + smooth(12.0, 3) * 15
    return np.clip(picture, 0, 255).astype(np.uint8)


def edited(picture: np.ndarray, edit: str, rng: np.random.Generator) -> np.ndarray:
    """A copy: cropped 1-3% at each side, resized, or re-encoded as JPEG."""
    height, width = picture.shape[:2]
    if edit == "crop":
        cuts = [int(rng.integers(0, round(0.03 * side) + 1)) for side in (width, height, width, height)]
        return picture[cuts[1]:height - cuts[3], cuts[0]:width - cuts[2]].copy()
    if edit == "resize":
        scale = float(rng.choice([0.75, 1.5]))
        return np.asarray(Image.fromarray(picture).resize((round(width * scale), round(height * scale)), Image.BICUBIC))
    encoded = io.BytesIO()
    Image.fromarray(picture).save(encoded, format="JPEG", quality=int(rng.integers(75, 91)))
    return np.asarray(Image.open(encoded).convert("RGB"))


def features(pictures: list[np.ndarray]) -> dict[str, np.ndarray]:
    """What the audit stores per file (file_checks' similarity check), for near_duplicate_pairs."""
    greys = [grey_of(picture) for picture in pictures]
    hashes, fine, detail = zip(*(similarity_features(grey) for grey in greys))
    native, shapes = zip(*(native_patch(grey) for grey in greys))
    return {"hashes": np.stack(hashes), "fine": np.stack(fine),
            "detail": CloseLook(np.stack(detail), np.stack(native), np.stack(shapes)),
            "crops": np.stack([crop_hashes(grey) for grey in greys]),
            "thumbnails": np.stack([tiny_thumbnail(picture) for picture in pictures])}


def copies_found(edit: str, confirm: Confirm, seed: int) -> int:
    """40 generated textures and a copy of each: how many copies are paired with their original
    (asserting that no other pair is: two different textures never are)."""
    rng = np.random.default_rng(seed)
    originals = [texture(rng) for _ in range(40)]
    pictures = originals + [edited(picture, edit, rng) for picture in originals]
    pairs = near_duplicate_pairs(max_distance=POLICY.near_duplicate_distance, confirm=confirm, **features(pictures))
    found = {tuple(pair) for pair in pairs.tolist()}
    assert found <= {(index, index + 40) for index in range(40)}, found  # nothing but original-copy pairs
    return len(found)


@pytest.mark.parametrize("edit", ["resize", "jpeg"])
def test_resized_and_reencoded_textures_group_with_their_originals(edit):
    assert copies_found(edit, CONFIRM, seed=2) >= 39


def test_cropped_textures_group_with_their_originals_as_far_as_the_bar_allows():
    """Crops of 0-3% a side: at the default crop bar (0.999, which keeps clean MNIST free of
    groups) a share of them; at 0.997, a bar a set without look-alikes can afford, nearly all.
    Without the crop hashes and the crop-tolerant comparison, next to none."""
    strict = Confirm(min_similarity=CONFIRM.min_similarity, max_colour_difference=CONFIRM.max_colour_difference)
    without = copies_found("crop", strict, seed=1)
    default = copies_found("crop", CONFIRM, seed=1)
    looser = copies_found("crop", Confirm(min_similarity=CONFIRM.min_similarity,
                                          max_colour_difference=CONFIRM.max_colour_difference,
                                          min_crop_similarity=0.997), seed=1)
    assert without <= 8 and default >= without + 4 and looser >= 36, (without, default, looser)


def test_crops_need_the_crop_hashes_and_the_crop_tolerant_confirmation():
    """Without the crop hashes (pHash only) and with the crop-tolerant comparison off, fewer crops
    are found: each part carries its share (the figures of benchmarks/audit_precision.py)."""
    rng = np.random.default_rng(4)
    originals = [texture(rng) for _ in range(40)]
    found = features(originals + [edited(picture, "crop", rng) for picture in originals])
    settings = dict(hashes=found["hashes"], fine=found["fine"], thumbnails=found["thumbnails"],
                    max_distance=POLICY.near_duplicate_distance)
    both = len(near_duplicate_pairs(crops=found["crops"], confirm=CONFIRM, **settings))
    no_crop_hashes = len(near_duplicate_pairs(confirm=CONFIRM, **settings))
    strict = Confirm(min_similarity=CONFIRM.min_similarity, max_colour_difference=CONFIRM.max_colour_difference)
    no_tolerance = len(near_duplicate_pairs(crops=found["crops"], confirm=strict, **settings))
    assert both > no_crop_hashes and both > no_tolerance


def stroke(rng: np.random.Generator) -> np.ndarray:
    """A handwritten-looking "1" on 28x28 black by a random writer: its slant, thickness, length,
    place and a slight bend differ from writer to writer."""
    canvas = np.zeros((112, 112), dtype=np.uint8)  # drawn 4x larger, area-resized like a scan
    angle = np.radians(rng.uniform(-25, 25))
    length, bend = rng.uniform(55, 85), rng.uniform(-8, 8)
    centre = np.array([56 + rng.uniform(-10, 10), 56 + rng.uniform(-6, 6)])
    steps = np.linspace(-0.5, 0.5, 30)
    points = [(centre[0] + step * length * np.sin(angle) + bend * (1 - 4 * step * step),
               centre[1] + step * length * np.cos(angle)) for step in steps]
    thickness = int(rng.integers(7, 15))
    cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, int(rng.integers(200, 256)), thickness)
    return cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)


def test_many_writers_ones_are_not_near_duplicates_even_as_crops():
    """300 generated "1"s by different writers: look-alikes whose pHashes and crop hashes meet by
    the thousand, yet no pair is confirmed, crop-tolerantly or not; while a 1-pixel crop of one
    of them, rescaled, still may be found, only ever with its own original."""
    rng = np.random.default_rng(5)
    ones = [np.repeat(stroke(rng)[:, :, None], 3, axis=2) for _ in range(300)]
    found = features(ones)
    candidates = len(crop_pairs(found["crops"], np.ascontiguousarray(found["hashes"]).view(np.uint64).ravel(),
                                 max_distance=POLICY.near_duplicate_distance, queries=None))
    assert candidates > 300  # the crop hashes do make look-alikes candidates ...
    pairs = near_duplicate_pairs(max_distance=POLICY.near_duplicate_distance, confirm=CONFIRM, **found)
    assert len(pairs) == 0, pairs[:5]  # ... and the confirmation refuses every one
    assert near_duplicate_groups(pairs, count=300, fine=found["fine"], confirm=CONFIRM) == []


@pytest.mark.parametrize(("method", "direct_key_bits"), [("index", 22), ("index", 0), ("exhaustive", 22)])
@pytest.mark.parametrize("seed", range(6))
def test_cross_pairs_are_exactly_every_close_pair(seed, method, direct_key_bits, monkeypatch):
    """Generated codes (random, clustered, repeated, all-zero and all-one) against a generated
    database, queries owned by database entries or not: the indexed cross search gives exactly the
    pairs a full comparison gives, never a query with its owner."""
    monkeypatch.setattr(hamming, "_DIRECT_KEY_BITS", direct_key_bits)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=int(rng.integers(1, 40)), dtype=np.uint64)
    near = base[rng.integers(0, len(base), size=3000)] ^ (np.uint64(1) << rng.integers(0, 64, size=3000).astype(np.uint64))
    database = np.concatenate([near, base, np.zeros(5, np.uint64), np.full(5, np.uint64(2**64 - 1))])
    queries = np.concatenate([near[rng.integers(0, len(near), size=500)] ^ np.uint64(int(rng.integers(0, 2**20))),
                              rng.integers(0, 2**63, size=200, dtype=np.uint64), np.zeros(2, np.uint64)])
    max_distance = int(rng.integers(0, 9))
    # Each query may belong to a database entry (a crop hash to its own file's pHash), often a close one.
    owners = rng.integers(-1, len(database), size=len(queries))
    owners[:300] = np.maximum(owners[:300], 0)
    queries[:300] = database[owners[:300]] ^ np.uint64(int(rng.integers(0, 8)))
    distances = popcount(queries[:, None] ^ database[None, :])
    expected = set(map(tuple, np.argwhere(distances <= max_distance).tolist())) - set(enumerate(owners.tolist()))
    found = cross_pairs(queries, database, max_distance=max_distance, method=method, owners=owners)
    assert set(map(tuple, found.tolist())) == expected and len(found) == len(expected)  # each pair once


def test_crop_pairs_of_queried_rows_are_the_full_answer_restricted():
    """An incremental audit searches only its changed rows' crop pairs: exactly the full search's
    pairs that have a changed end, whichever rows changed."""
    rng = np.random.default_rng(6)
    originals = [texture(rng, side=32) for _ in range(30)]
    found = features(originals + [edited(picture, "crop", rng) for picture in originals])
    codes = np.ascontiguousarray(found["hashes"]).view(np.uint64).ravel()
    full = {tuple(pair) for pair in crop_pairs(found["crops"], codes, max_distance=8, queries=None).tolist()}
    assert full
    for _ in range(10):
        queries = rng.random(60) < rng.uniform(0.02, 0.5)
        some = {tuple(pair) for pair in crop_pairs(found["crops"], codes, max_distance=8, queries=queries).tolist()}
        assert some == {pair for pair in full if queries[pair[0]] or queries[pair[1]]}


def _write_textures(root, rng, *, count: int, copied: int, suffix: str, copy) -> None:
    """`count` textures as PNGs under root/textures, the first `copied` with copy(picture)'s bytes beside them."""
    for index in range(count):
        picture = texture(rng)
        faults.write(root / "textures" / f"{index:02d}.png", faults.encode(Image.fromarray(picture), "PNG"))
        if index < copied:
            faults.write(root / "textures" / f"{index:02d}{suffix}", copy(picture))


def test_an_audit_finds_cropped_files_and_a_cache_of_the_previous_format_is_rebuilt(tmp_path):
    """Files on disk: cropped copies join their originals' groups (at a crop bar of 0.997, which
    a set without look-alikes affords); a cache written in format 6 (before the distinctive
    matches: pairs stored as [path, path]) is a clean miss that decodes every file again, then format 7."""
    rng = np.random.default_rng(7)
    root, cache = tmp_path / "data", tmp_path / "audit-cache.json"
    _write_textures(root, rng, count=12, copied=6, suffix="_cropped.png",
                    copy=lambda picture: faults.encode(Image.fromarray(edited(picture, "crop", rng)), "PNG"))
    data = DataParams(dir=str(root))
    policy = AuditParams(near_duplicate_crop_similarity=0.997)
    first = audit_dataset(root=root, data=data, policy=policy, cache_file=cache)
    groups = sorted(sorted(group["members"]) for group in first.near_duplicate_groups)
    assert len(groups) >= 5 and all(members == [f"textures/{members[0][9:11]}.png",
                                                f"textures/{members[0][9:11]}_cropped.png"] for members in groups)
    assert json.loads(cache.read_text())["format"] == FORMAT == 7
    stored = json.loads(cache.read_text())
    stored["format"] = 6
    stored["near_duplicates"]["pairs"] = [pair[:2] for pair in stored["near_duplicates"]["pairs"]]
    cache.write_text(json.dumps(stored))
    rebuilt = audit_dataset(root=root, data=data, policy=policy, cache_file=cache)
    assert rebuilt.files_decoded == 18 and rebuilt.as_dict() == first.as_dict()
    assert json.loads(cache.read_text())["format"] == FORMAT
    assert audit_dataset(root=root, data=data, policy=policy, cache_file=cache).files_decoded == 0


def test_past_the_crop_search_cap_only_pairs_the_phash_finds_are_reported(tmp_path, monkeypatch):
    """A dataset larger than CROP_SEARCH_MAX_FILES is searched by pHash alone (the crop search grows
    faster than the files); at or below it, the crops are found."""
    from trainwell.audit import dataset

    rng = np.random.default_rng(11)
    root = tmp_path / "data"
    for index in range(8):
        picture = texture(rng)
        faults.write(root / "textures" / f"{index:02d}.png", faults.encode(Image.fromarray(picture), "PNG"))
        faults.write(root / "textures" / f"{index:02d}_cropped.png",
                     faults.encode(Image.fromarray(edited(picture, "crop", rng)), "PNG"))
    data, policy = DataParams(dir=str(root)), AuditParams(near_duplicate_crop_similarity=0.997)

    monkeypatch.setattr(dataset, "NEIGHBOUR_SEARCH_MAX_FILES", 0)  # the hashes' search alone

    def grouped(cap: int) -> int:
        monkeypatch.setattr(dataset, "CROP_SEARCH_MAX_FILES", cap)
        report = audit_dataset(root=root, data=data, policy=policy, cache_file=tmp_path / f"cache-{cap}.json")
        return len(report.near_duplicate_groups)

    with_crops, without = grouped(16), grouped(15)
    assert with_crops > without and with_crops >= 4


def test_crop_hashes_and_crop_similarity_take_any_picture_shape_and_content():
    """Generated odd pictures (1x1, one row, one column, huge aspect ratios, flat, noise, extremes):
    five crop hashes each, and crop-tolerant similarities that are finite and at most 1."""
    rng = np.random.default_rng(8)
    shapes = [(1, 1), (1, 300), (300, 1), (2, 3), (7, 500), (129, 128), *(tuple(rng.integers(1, 200, size=2))
                                                                         for _ in range(40))]
    greys = []
    for index, (height, width) in enumerate(shapes):
        kind = index % 4
        grey = (np.full((height, width), (0, 255, 128, 0)[kind], dtype=np.uint8) if kind != 3
                else rng.integers(0, 256, size=(height, width), dtype=np.uint8))
        codes = crop_hashes(grey)
        assert codes.shape == (5, 8) and codes.dtype == np.uint8
        greys.append(similarity_features(grey)[1])
    fine = np.stack(greys)
    similarity = crop_tolerant_similarities(fine, fine[::-1])
    assert np.isfinite(similarity).all() and (similarity <= 1.0 + 1e-6).all()
    assert (crop_tolerant_similarities(fine, fine) >= 0.999).all()  # each picture is an uncropped copy of itself


def test_incremental_search_with_crops_plus_kept_pairs_is_the_full_answer():
    """near_duplicate_pairs with `rows` (the changed files) plus the full answer's pairs between
    unchanged files gives the full answer, crop pairs included, for generated change sets."""
    rng = np.random.default_rng(9)
    originals = [texture(rng, side=40) for _ in range(30)]
    found = features(originals + [edited(picture, "crop", rng) for picture in originals]
                     + [edited(picture, "jpeg", rng) for picture in originals[:10]])
    loose = Confirm(min_similarity=CONFIRM.min_similarity, max_colour_difference=CONFIRM.max_colour_difference,
                    min_crop_similarity=0.99)
    settings = dict(max_distance=POLICY.near_duplicate_distance, confirm=loose, **found)
    full = {tuple(pair) for pair in near_duplicate_pairs(**settings).tolist()}
    assert len(full) >= 30
    for _ in range(8):
        changed = np.flatnonzero(rng.random(70) < rng.uniform(0.02, 0.4))
        fresh = {tuple(pair) for pair in near_duplicate_pairs(rows=changed, **settings).tolist()}
        kept = {pair for pair in full if pair[0] not in changed and pair[1] not in changed}
        assert fresh | kept == full and not fresh & kept


def test_kept_pairs_are_recomputed_when_the_code_that_scored_them_changes(tmp_path, monkeypatch):
    """The cache keeps the near-duplicate pairs among unchanged files. Pairs kept by other pair
    code are stale: all of them are scored again (the files' own results stay, nothing is decoded)."""
    from trainwell.audit import cache as audit_cache
    from trainwell.audit import dataset as audit_dataset_module

    root, cache = tmp_path / "data", tmp_path / "audit-cache.json"
    _write_textures(root, np.random.default_rng(8), count=8, copied=3, suffix="_copy.jpg",
                    copy=lambda picture: faults.encode(Image.fromarray(picture), "JPEG"))
    data, policy = DataParams(dir=str(root)), AuditParams()
    first = audit_dataset(root=root, data=data, policy=policy, cache_file=cache)
    assert len(first.near_duplicate_groups) == 3
    searches: list[str] = []
    original = audit_dataset_module.scored_pairs

    def recorded(**arguments):
        searches.append("changed files" if arguments.get("rows") is not None else "every file")
        return original(**arguments)

    monkeypatch.setattr(audit_dataset_module, "scored_pairs", recorded)
    # The same code: the kept pairs are used, no pair is searched for again.
    again = audit_dataset(root=root, data=data, policy=policy, cache_file=cache)
    assert again.files_decoded == 0 and searches == [] and again.near_duplicate_groups == first.near_duplicate_groups
    # Other pair code (another trainwell): every pair scored again from the cached columns. The
    # module that chooses which files are searched (blanks are not) counts as pair code.
    assert {"audit/dataset.py", "audit/candidates.py", "audit/near_duplicates.py"} <= set(audit_cache._PAIR_CODE)
    monkeypatch.setattr(audit_cache, "pair_code_digest", lambda: "another version")
    rescored = audit_dataset(root=root, data=data, policy=policy, cache_file=cache)
    assert rescored.files_decoded == 0 and searches == ["every file"]
    assert rescored.near_duplicate_groups == first.near_duplicate_groups
