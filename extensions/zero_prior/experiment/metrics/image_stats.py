"""Low-level image statistics that catch a broken arm at a glance (blur, washed-out or dark images).

All three are computed on the Rec. 601 luma ``0.299 R + 0.587 G + 0.114 B``
scaled to [0, 1], in float64, so values are comparable across image sizes
and file types:

- brightness: mean luma;
- RMS contrast: population standard deviation of the luma;
- sharpness: variance of the 4-neighbour Laplacian ``[[0,1,0],[1,-4,1],[0,1,0]]``
  over the interior pixels only (no invented border values). On the [0, 1]
  scale this is OpenCV's ``cv2.Laplacian(gray, CV_64F).var()`` on 0-255 images
  divided by 255**2, apart from OpenCV's border pixels.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ...errors import MetricInputError
from .images import PilOrPath, open_rgb

ImageLike = PilOrPath | np.ndarray

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def luminance(image: ImageLike) -> np.ndarray:
    """Luma in [0, 1] as a float64 ``[H, W]`` array.

    Accepts a PIL image, a path, or an array: ``uint8`` (0-255) or float in
    [0, 1], shaped ``[H, W]`` (already gray), ``[H, W, 3]`` or ``[H, W, 4]``
    (alpha ignored).

    >>> luminance(np.full((2, 2, 3), 255, dtype=np.uint8))
    array([[1., 1.],
           [1., 1.]])
    """
    if isinstance(image, (str, os.PathLike, Image.Image)):
        image = np.asarray(open_rgb(image))
    array = np.asarray(image)
    if array.dtype == np.uint8:
        values = array.astype(np.float64) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if values.size and (values.min() < 0 or values.max() > 1):
            raise MetricInputError(f"float image values span [{values.min()}, {values.max()}]; scale them to [0, 1]")
    else:
        raise MetricInputError(f"image dtype {array.dtype} is not supported; pass uint8 (0-255) or float in [0, 1]")
    if values.ndim == 3 and values.shape[2] in (3, 4):
        return values[..., :3] @ LUMA_WEIGHTS
    if values.ndim == 2:
        return values
    raise MetricInputError(f"image shape {array.shape} is not [H, W], [H, W, 3] or [H, W, 4]")


def brightness(image: ImageLike) -> float:
    """Mean luma in [0, 1].

    >>> brightness(np.full((4, 4), 0.25))
    0.25
    """
    return float(luminance(image).mean())


def rms_contrast(image: ImageLike) -> float:
    """Standard deviation of the luma (population, ddof 0), in [0, 0.5].

    >>> rms_contrast(np.array([[0.0, 1.0], [1.0, 0.0]]))
    0.5
    """
    return float(luminance(image).std())


def sharpness(image: ImageLike) -> float:
    """Variance of the Laplacian of the luma over interior pixels; 0 for a flat image.

    A one-pixel 0/1 checkerboard gives Laplacian values of +-4, hence 16.

    >>> sharpness(np.indices((6, 6)).sum(axis=0) % 2 * 1.0)
    16.0
    """
    luma = luminance(image)
    if min(luma.shape) < 3:
        raise MetricInputError(f"image of {luma.shape[1]}x{luma.shape[0]} pixels is too small for a Laplacian (min "
                               "3x3)")
    laplacian = (
        luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * luma[1:-1, 1:-1]
    )
    return float(laplacian.var())


def image_stats(image: ImageLike) -> dict[str, float]:
    """All three statistics of one image.

    Example::

        image_stats("beach.png")  # -> {'brightness': 0.52, 'rms_contrast': 0.21, 'sharpness': 0.0034}
    """
    luma = luminance(image)
    return {"brightness": brightness(luma), "rms_contrast": rms_contrast(luma), "sharpness": sharpness(luma)}
