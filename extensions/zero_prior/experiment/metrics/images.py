"""How metrics accept images: one place for the accepted types and the error for the rest."""

from __future__ import annotations

import os

from PIL import Image

from ...errors import MetricInputError

PilOrPath = Image.Image | str | os.PathLike[str]


def open_rgb(image: PilOrPath) -> Image.Image:
    """``image`` as an RGB PIL image; a path is read from disk (alpha is dropped, as the models expect RGB).

    Example::

        open_rgb("beach.png").mode  # -> 'RGB'
    """
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise MetricInputError(f"{image}: no such image file")
        with Image.open(image) as opened:
            return opened.convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise MetricInputError(f"got {type(image).__name__}; pass a PIL image or an image file path")
