"""The served model bounds its work like the CLI: generated bombs (pixels by header, scans, frames, bytes) are refused before decoding, with an error naming the image."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from tests import faults, fuzzing
from tests.helpers import EXPORT_MAX_IMAGE_BYTES, EXPORT_MAX_PIXELS, REPO_ROOT, tool_env
from trainwell.training.served_limits import ServedLimits

LIMITS = ServedLimits(max_pixels=EXPORT_MAX_PIXELS, max_image_bytes=EXPORT_MAX_IMAGE_BYTES)
WALK_STATUS = {"bad_block": 2, "no_image": 3, "truncated": 4}


@pytest.fixture(scope="module")
def walk():
    import tensorflow as tf

    from trainwell.training.served_input import gif_first_image

    return tf.function(gif_first_image, input_signature=[tf.TensorSpec([], tf.string)])


@pytest.fixture(scope="module")
def check():
    """check_request alone, as a graph: the images it lets through, or its InvalidArgumentError."""
    import tensorflow as tf

    from trainwell.training.served_input import check_request

    def checked(image_bytes):
        result = check_request(image_bytes, LIMITS)
        return result.image_bytes, result.gif_first_image_end

    return tf.function(checked, input_signature=[tf.TensorSpec([None], tf.string)])


def test_the_gif_walk_finds_the_first_image_of_generated_and_mutated_gifs(walk):
    """Against a plain Python walk of the blocks: the same end, size, or the same reason for none."""
    import tensorflow as tf

    rng = random.Random(0)
    compared = {"done": 0, "refused": 0}
    for _ in range(60):
        whole = fuzzing.random_gif(rng)
        for data in (whole, fuzzing.mutate(whole, rng), fuzzing.mutate(fuzzing.mutate(whole, rng), rng)):
            end, width, height, status = walk(tf.constant(data)).numpy().tolist()
            expected = fuzzing.gif_first_image_reference(data)
            if isinstance(expected, str):
                assert status == WALK_STATUS[expected], (expected, status, data[:40])
                compared["refused"] += 1
            else:
                assert (status, end, width, height) == (1, *expected), (expected, status, end)
                compared["done"] += 1
    assert min(compared.values()) > 25, compared


def test_a_refusal_names_each_refused_image_and_counts_them(check):
    """Every image is read before any is decoded; the error counts the refused and names the first three.
    (Each kind of bomb, generated, goes through the exported SavedModel in the slow test below.)"""
    import tensorflow as tf

    good = faults.png_bytes(1)
    request = [good, fuzzing.png_claiming(20000, 20000), good, fuzzing.jpeg_scans(100),
               faults.encode(np.zeros((4, 4, 3), np.uint8), "WEBP"), b""]
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        check(tf.constant(request))
    message = refused.value.message
    assert "4 of 6 images past the limits" in message
    # The first three are named; the message stays one bounded line whatever the request holds.
    assert "image 1 of the request: 20000x20000 = 400000000 pixels, more than the limit of 1000000" in message
    assert "image 3 of the request: more than 64 JPEG scans" in message
    assert "image 4 of the request: not a JPEG, PNG, GIF or BMP" in message and "image 5 of" not in message


def test_only_the_first_image_of_a_gif_reaches_the_decoder(check):
    import tensorflow as tf

    # Later frames of 16000x16000 declared (and data for a million pixels each): never read.
    data = fuzzing.gif((8, 8), [(8, 8, fuzzing.lzw_constant(64))] + [(16000, 16000, fuzzing.lzw_constant(10**6))] * 3)
    _, ends = check(tf.constant([faults.jpeg_bytes(0), data]))
    assert ends.numpy().tolist()[0] == 0
    end = ends.numpy().tolist()[1]
    assert fuzzing.gif_first_image_reference(data)[0] == end < len(data) // 10


SERVE_BOMBS = """
import json, resource, sys
import numpy as np
import tensorflow as tf
sys.path.insert(0, sys.argv[2])
from tests import faults, fuzzing
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
good = faults.jpeg_bytes(0)
serve(image_bytes=tf.constant([good]))  # the graph built and run once: what follows is the requests
baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcomes = {}
def ask(name, data):
    try:
        probabilities = serve(image_bytes=tf.constant([good, data]))["probabilities"].numpy()
        outcomes[name] = {"served": bool(np.isfinite(probabilities).all() and np.allclose(probabilities.sum(1), 1, atol=1e-4))}
    except tf.errors.InvalidArgumentError as error:
        outcomes[name] = {"refused": error.message}
expected = {}
for name, (data, reason) in fuzzing.served_bombs(int(sys.argv[3]), int(sys.argv[4])).items():
    ask(name, data)
    expected[name] = reason
fuzzed = fuzzing.corpus(400, seed=1)
for name, data in fuzzed.items():
    if name.rsplit(".", 1)[1] in ("jpg", "png", "gif", "bmp"):
        ask("fuzz/" + name, data)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcomes": outcomes, "expected": expected, "growth_mib": (peak_kib - baseline_kib) / 1024}))
"""


@pytest.mark.tf_process  # the shared exported project is made by `trainwell` commands; this serves in a child
def test_the_exported_model_refuses_bombs_and_serves_the_rest_in_bounded_memory(exported):
    """Through the SavedModel as TF Serving loads it, in a fresh process whose peak memory is measured.

    Unguarded, the same signature decoded the real 10000x10000 PNG (300 MB of pixels) and every frame
    of the GIFs (three of 50 million pixels each): 298 MiB more at its peak; guarded, 8 MiB.
    """
    model = exported / "models" / "export" / "saved_model"
    result = subprocess.run([sys.executable, "-c", SERVE_BOMBS, str(model), str(REPO_ROOT), str(EXPORT_MAX_PIXELS),
                             str(EXPORT_MAX_IMAGE_BYTES)], capture_output=True, text=True, env=tool_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout)
    outcomes = measured["outcomes"]
    assert len(measured["expected"]) > 35
    for name, reason in measured["expected"].items():
        if reason is None:
            assert outcomes[name] == {"served": True}, (name, outcomes[name])
        else:
            assert reason in outcomes[name].get("refused", ""), (name, outcomes[name])
            assert "image 1 of the request" in outcomes[name]["refused"] or name == "jpeg-past-libjpeg"
    fuzzed = {name: outcome for name, outcome in outcomes.items() if name.startswith("fuzz/")}
    # Every mutated file gets probabilities or an error: nothing else, no crash, no garbage.
    assert all(outcome in ({"served": True},) or "refused" in outcome for outcome in fuzzed.values())
    assert sum("served" in outcome for outcome in fuzzed.values()) > 40
    assert sum("refused" in outcome for outcome in fuzzed.values()) > 40
    assert measured["growth_mib"] < 64, measured["growth_mib"]  # 8 MiB measured; 298 MiB unguarded


@pytest.mark.tf_process  # the shared exported project is made by `trainwell` commands
def test_a_gif_is_served_as_its_first_frame(exported):
    """An animated GIF gets the probabilities of its first frame alone, as `trainwell predict` and training see it."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(exported / "models" / "export" / "saved_model")).signatures["serving_default"]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(5)]
    from PIL import Image

    pictures = [Image.fromarray(frame).quantize(64) for frame in frames]
    animated = faults.encode(pictures[0], "GIF", save_all=True, append_images=pictures[1:])
    first = faults.encode(pictures[0], "GIF")
    served = serve(image_bytes=tf.constant([animated, first]))["probabilities"].numpy()
    np.testing.assert_allclose(served[0], served[1], atol=1e-6)  # rows of one batch differ in the last bits
    # The pixels themselves are identical: the cut file decodes to the first frame, exactly.
    from trainwell.training.export import decode_for_serving
    from trainwell.training.served_input import gif_first_image

    end = gif_first_image(tf.constant(animated))[0]
    assert 0 < int(end) < len(animated)
    np.testing.assert_array_equal(decode_for_serving(tf.constant(animated), size=40, gif_first_image_end=end).numpy(),
                                  decode_for_serving(tf.constant(first), size=40).numpy())


def test_the_model_card_states_what_the_endpoint_refuses():
    """The card's Serving section lists every limit baked into the signature, from the project's params."""
    from trainwell.params import Params
    from trainwell.reports.card import markdown_text, render_card_markdown
    from trainwell.training.served_limits import describe, served_limits

    limits = served_limits(Params.model_validate({"audit": {"max_pixels": 12_345_678},
                                                  "export": {"max_image_bytes": 9_999_999}}))
    assert (limits.max_pixels, limits.max_image_bytes) == (12_345_678, 9_999_999)
    lines = describe(limits)
    card = {"trainwell_version": "0", "intended_use": "x", "classes": ["a"], "audit": {}, "training": {},
            "model": {"file": "m.keras", "sha256": "0" * 64, "network": "n", "input": "i"},
            "data": {"dir": "d", "version": None, "splits": {}}, "metrics": {"test_images": 1}, "per_class": {},
            "label_review": None, "label_review_file": "s.csv", "export": None, "limitations": [],
            "served_refusals": lines}
    text = render_card_markdown(card)
    assert "## Serving" in text and "INVALID_ARGUMENT" in text
    for line in lines:
        assert f"- {markdown_text(line)}\n" in text
    assert any("12,345,678 pixels" in line for line in lines) and any("9,999,999 bytes" in line for line in lines)
    # export.max_image_bytes never exceeds the largest file predict reads for that pixel limit.
    assert served_limits(Params.model_validate({"audit": {"max_pixels": 10}})).max_image_bytes == 10 * 16 + (1 << 20)
