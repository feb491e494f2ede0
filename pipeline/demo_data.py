"""Stage `demo_data`: a deterministic synthetic five-class image set, the embedded default dataset."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.params import DemoParams, load_params
from pipeline.progress import progress

SHAPES = ("circle", "square", "triangle", "cross", "ring")


def _polygon(center: tuple[float, float], radius: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [
        (center[0] + radius * math.cos(angle + 2 * math.pi * k / sides), center[1] + radius * math.sin(angle + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def draw_shape(*, shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image: a shape of random colour, size, position and rotation on a noisy background."""
    # Any hue for both, but the shape is always clearly lighter than the background, so the
    # class is carried by the outline (what a small CNN can learn quickly), not by colour.
    background = rng.integers(0, 110, size=3)
    colour = rng.integers(150, 256, size=3)
    noise = rng.normal(0.0, 10.0, size=(size, size, 3))
    canvas = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.24, 0.36)
    margin = radius + 2
    center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
    angle = rng.uniform(0, 2 * math.pi)
    fill = tuple(int(value) for value in colour)
    box = [center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(radius * 0.3)))
    elif shape == "square":
        draw.polygon(_polygon(center, radius, 4, angle), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(center, radius, 3, angle), fill=fill)
    elif shape == "cross":
        arm = max(2, int(radius * 0.35))
        for theta in (angle, angle + math.pi / 2):
            dx, dy = math.cos(theta) * radius, math.sin(theta) * radius
            draw.line([(center[0] - dx, center[1] - dy), (center[0] + dx, center[1] + dy)], fill=fill, width=arm)
    else:
        raise ValueError(f"unknown demo shape '{shape}'; choose from {', '.join(SHAPES)}")
    return np.asarray(image)


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes at quality 90; libjpeg is deterministic, so the same pixels give the same bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def generate(*, out_dir: str | Path, demo: DemoParams) -> int:
    """Write `images_per_class` JPEGs per class into out_dir/<class>/; return how many were written."""
    unknown = [name for name in demo.classes if name not in SHAPES]
    if unknown:
        raise ValueError(f"demo.classes {unknown} are not demo shapes; choose from {', '.join(SHAPES)}")
    out_dir = Path(out_dir)
    # The folder is a DVC output of this stage (never user data), so it is rebuilt whole.
    if out_dir.exists():
        shutil.rmtree(out_dir)
    jobs = [(label, index) for label in demo.classes for index in range(demo.images_per_class)]
    for label, index in progress(jobs, total=len(jobs), description="demo_data"):
        # One generator per image, seeded by (seed, class, index): any image can be regenerated alone.
        rng = np.random.default_rng([demo.seed, SHAPES.index(label), index])
        image = draw_shape(shape=label, size=demo.image_size, rng=rng)
        path = out_dir / label / f"{label}_{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(image))
    if demo.inject_corrupt:
        # A truncated JPEG, to show the audit naming it and the pipeline leaving it out.
        victim = out_dir / demo.classes[0] / "injected_truncated.jpg"
        whole = encode_jpeg(draw_shape(shape=demo.classes[0], size=demo.image_size, rng=np.random.default_rng(demo.seed)))
        victim.write_bytes(whole[: len(whole) // 2])
    return len(jobs)


def main(*, params_file: str = "params.yaml") -> int:
    params = load_params(params_file)
    count = generate(out_dir=params.paths.demo_dir, demo=params.demo)
    print(f"demo_data: wrote {count} images in {len(params.demo.classes)} classes to {params.paths.demo_dir}")
    return 0
