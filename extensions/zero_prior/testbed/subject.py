"""A procedurally drawn subject data set in ai-toolkit's layout (``NNN.png`` + ``NNN.txt``).

Subject training needs one identity seen in many poses: the placeholder token
should bind to what stays constant (shape, colours, stripes), not to what
varies. The subject here is a made-up striped fish (orange body with navy
stripes, navy tail and fin, a yellow crest and a white eye) that no base model
has a word for, drawn with PIL at random position, scale, rotation and
mirroring over varied gradient backgrounds with muted clutter. Drawing is
supersampled 4x and each image is seeded by ``(seed, index)``, so output is
identical across runs and the first N images do not depend on ``num_images``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..aitk.facts import IMAGE_EXTENSIONS
from ..errors import ConfigError

SUPERSAMPLE = 4
SPRITE_SIZE = 256
BODY = (240, 118, 24)
STRIPE = (26, 36, 112)
CREST = (250, 212, 40)
_GENERATED_NAME = re.compile(r"^\d{3,}\.(png|txt)$")


@lru_cache(maxsize=1)
def _sprite() -> Image.Image:
    """The subject in its canonical pose, facing right, on a transparent square."""
    s = SPRITE_SIZE
    body_box = (0.22 * s, 0.30 * s, 0.92 * s, 0.70 * s)

    body_mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(body_mask).ellipse(body_box, fill=255)
    body = Image.new("RGBA", (s, s), BODY + (255,))
    stripes = ImageDraw.Draw(body)
    for left in (0.30, 0.41, 0.52, 0.63, 0.74, 0.85):  # six vertical navy bands
        stripes.rectangle((left * s, 0, (left + 0.045) * s, s), fill=STRIPE + (255,))

    sprite = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    forked_tail = [(0.26 * s, 0.50 * s), (0.04 * s, 0.28 * s), (0.10 * s, 0.50 * s), (0.04 * s, 0.72 * s)]
    draw.polygon(forked_tail, fill=STRIPE + (255,))
    draw.polygon([(0.42 * s, 0.34 * s), (0.55 * s, 0.14 * s), (0.68 * s, 0.34 * s)], fill=STRIPE + (255,))  # fin
    draw.polygon([(0.60 * s, 0.66 * s), (0.66 * s, 0.80 * s), (0.72 * s, 0.66 * s)], fill=CREST + (255,))  # belly fin
    sprite.paste(body, (0, 0), body_mask)
    draw.ellipse((0.74 * s, 0.40 * s, 0.84 * s, 0.50 * s), fill=(255, 255, 255, 255))  # eye
    draw.ellipse((0.78 * s, 0.43 * s, 0.82 * s, 0.47 * s), fill=(0, 0, 0, 255))
    draw.ellipse((0.52 * s, 0.24 * s, 0.58 * s, 0.30 * s), fill=CREST + (255,))  # crest dot on the fin
    return sprite


def _background(rng: np.random.Generator, side: int) -> Image.Image:
    """A two-colour gradient in a random direction with a few muted blobs and grain."""
    top, bottom = rng.uniform(40, 230, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    blobs = [
        (rng.uniform(0, 1, size=2), rng.uniform(0.05, 0.25, size=2), rng.uniform(60, 200, size=3), rng.random())
        for _ in range(int(rng.integers(2, 6)))
    ]
    ys, xs = np.mgrid[0:side, 0:side] / max(side - 1, 1)
    ramp = np.clip(0.5 + (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle), 0, 1)[..., None]
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 4, size=(side, side, 1))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert("RGBA")

    clutter = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(clutter)
    for centre, radii, colour, kind in blobs:
        (x, y), (rx, ry) = centre * side, radii * side
        shape = draw.ellipse if kind < 0.5 else draw.rectangle
        shape((x - rx, y - ry, x + rx, y + ry), fill=tuple(colour.astype(int)) + (90,))
    return Image.alpha_composite(image, clutter).convert("RGB")


def _draw_image(seed: int, index: int, size: int, streams: tuple[int, int] = (0, 1)) -> Image.Image:
    """One pose of the subject; depends only on ``(seed, index, streams)``, and ``size`` only scales it.

    ``streams`` pick the random draws of the pose and of the background:
    control images use their own, so they show the subject another way.
    """
    pose = np.random.default_rng([seed, index, streams[0]])
    mirror, angle, extent, x, y = pose.random(), pose.uniform(-35, 35), pose.uniform(0.55, 0.95), *pose.random(2)
    side = size * SUPERSAMPLE
    canvas = _background(np.random.default_rng([seed, index, streams[1]]), side)

    subject = _sprite().transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror < 0.5 else _sprite()
    subject = subject.rotate(float(angle), resample=Image.Resampling.BICUBIC, expand=True)
    pixels = int(side * extent)
    subject = subject.resize((pixels, pixels), Image.Resampling.LANCZOS)
    slack = side - pixels
    offset = (int((1.3 * x - 0.15) * slack), int((1.3 * y - 0.15) * slack))  # may hang slightly over an edge
    canvas.paste(subject, offset, subject)  # the sprite's alpha is the mask; offsets may be negative
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def make_subject_dataset(
    out_dir: str | Path,
    num_images: int = 8,
    size: int = 64,
    seed: int = 0,
    caption: str = "a photo of [trigger]",
    overwrite: bool = False,
    control_dir: str | Path | None = None,
) -> list[Path]:
    """Draw ``num_images`` poses of the striped fish into ``out_dir`` and return the image paths.

    Each ``NNN.png`` gets an ``NNN.txt`` caption (ai-toolkit replaces
    ``[trigger]`` with the job's trigger word). With ``control_dir`` each also
    gets a control image of the same name there (the fish in another pose and
    scene), as ai-toolkit's edit datasets pair them (``control_path``). A
    folder that already holds images is refused unless ``overwrite=True``,
    which replaces earlier ``NNN.png``/``NNN.txt`` files and leaves any other
    file alone.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     [p.name for p in make_subject_dataset(Path(tmp) / "fish", num_images=4, size=64)]
    ['000.png', '001.png', '002.png', '003.png']
    """
    if num_images < 1:
        raise ConfigError(f"num_images={num_images} must be at least 1")
    if size < 16:
        raise ConfigError(f"size={size} must be at least 16 pixels")
    out = Path(out_dir)
    control = Path(control_dir) if control_dir is not None else None
    folders = [out] if control is None else [out, control]
    for folder in folders:  # every folder checked before any is touched
        _refuse_images(folder, overwrite)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir():
            if _GENERATED_NAME.match(stale.name):
                stale.unlink()

    width = max(3, len(str(num_images - 1)))
    paths = []
    for index in range(num_images):
        image_path = out / f"{index:0{width}d}.png"
        _draw_image(seed, index, size).save(image_path)
        image_path.with_suffix(".txt").write_text(caption, encoding="utf-8")
        if control is not None:
            _draw_image(seed, index, size, streams=(2, 3)).save(control / image_path.name)
        paths.append(image_path)
    return paths


def _refuse_images(folder: Path, overwrite: bool) -> None:
    """Refuse a ``folder`` that already holds images unless ``overwrite``."""
    existing = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) \
        if folder.is_dir() else []
    if existing and not overwrite:
        raise ConfigError(
            f"{folder} already contains {len(existing)} image(s) (e.g. {existing[0]}); "
            "choose an empty folder or pass overwrite=True (--overwrite on the command line)"
        )
