"""Diversity within a prompt: mean pairwise LPIPS over the images of one prompt (different seeds).

A LoRA that memorised its training images makes every seed look alike; the
mean LPIPS distance between a prompt's images measures that collapse
(0 = identical images).

The ``lpips`` package ships its linear layers, but its backbone (torchvision's
ImageNet AlexNet, VGG16 or SqueezeNet) is downloaded by torchvision into
``torch.hub.get_dir()/checkpoints`` on first use. Without that file (and with
downloads not allowed, or failing) ``LpipsScorer.load`` raises
``MetricUnavailableError`` naming the file and the fix: diversity is then
reported missing. It is never replaced by a random backbone or another distance.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ...devices import default_device
from ...errors import ConfigError, MetricInputError, MetricUnavailableError
from .images import PilOrPath, open_rgb

# lpips net name -> (torchvision builder, weights) its backbone loads (lpips/pretrained_networks.py: pretrained=True).
LPIPS_BACKBONES = {
    "alex": ("alexnet", "AlexNet_Weights.IMAGENET1K_V1"),
    "vgg": ("vgg16", "VGG16_Weights.IMAGENET1K_V1"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights.IMAGENET1K_V1"),
}


def backbone_checkpoint(net: str = "alex") -> Path:
    """Where torchvision keeps (or would download) the backbone weights of LPIPS ``net``.

    >>> backbone_checkpoint("alex").name
    'alexnet-owt-7be5be79.pth'
    """
    from torchvision.models import get_weight

    if net not in LPIPS_BACKBONES:
        raise ConfigError(f"LPIPS net {net!r} is unknown; choose one of {sorted(LPIPS_BACKBONES)}")
    url = get_weight(LPIPS_BACKBONES[net][1]).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


class LpipsScorer:
    """An LPIPS module and the pairwise-distance bookkeeping around it.

    Example::

        scorer = LpipsScorer.load("alex")
        scorer.diversity([image_seed0, image_seed1, image_seed2])  # -> 0.41
    """

    def __init__(self, module: Any, net: str, device: str, batch_size: int = 16) -> None:
        """Wrap an ``lpips.LPIPS`` module; numbers for a report come only from ``load`` (the published weights)."""
        self.module = module.eval().to(device)
        self.net = net
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, net: str = "alex", device: str | None = None, allow_download: bool = False, batch_size: int = 16
    ) -> LpipsScorer:
        """The published LPIPS (v0.1 linear layers on the ImageNet backbone), or ``MetricUnavailableError``.

        ``allow_download`` lets torchvision fetch a missing backbone; a failed
        download is reported as unavailable too.
        """
        try:
            import lpips
        except ImportError as error:
            raise MetricUnavailableError("the lpips package is not installed; pip install "
                                         "'zero-prior[eval]'") from error
        checkpoint = backbone_checkpoint(net)
        builder = LPIPS_BACKBONES[net][0]
        fix = (
            f"run `python -c \"import torchvision; torchvision.models.{builder}(weights='IMAGENET1K_V1')\"` once "
            f"with internet, or copy {checkpoint.name} into {checkpoint.parent}"
        )
        if not checkpoint.is_file() and not allow_download:
            raise MetricUnavailableError(
                f"LPIPS needs torchvision's ImageNet '{net}' backbone weights, not found at {checkpoint} "
                f"(the lpips package ships only its linear layers); {fix}"
            )
        try:
            with warnings.catch_warnings():
                # lpips still passes torchvision's deprecated ``pretrained=True``.
                warnings.simplefilter("ignore", UserWarning)
                module = lpips.LPIPS(net=net, verbose=False)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt file is a RuntimeError
            raise MetricUnavailableError(
                f"LPIPS '{net}' backbone could not be loaded from {checkpoint} ({error}); {fix}"
            ) from error
        return cls(module, net, default_device(device), batch_size)

    @torch.inference_mode()
    def pairwise_distances(self, images: Sequence[PilOrPath]) -> list[float]:
        """LPIPS distance of every unordered pair ``(i, j), i < j``, in ``itertools.combinations`` order."""
        pixels = _to_tensor(images)
        pairs = list(itertools.combinations(range(len(pixels)), 2))
        distances = []
        for start in range(0, len(pairs), self.batch_size):
            first, second = zip(*pairs[start : start + self.batch_size])
            a = pixels[list(first)].to(self.device)
            b = pixels[list(second)].to(self.device)
            distances += [float(d) for d in self.module(a, b).flatten()]
        return distances

    def diversity(self, images: Sequence[PilOrPath]) -> float:
        """Mean pairwise LPIPS of one prompt's images (at least two, all the same size)."""
        return float(np.mean(self.pairwise_distances(images)))


def _to_tensor(images: Sequence[PilOrPath]) -> torch.Tensor:
    """``[N, 3, H, W]`` float32 in [-1, 1], the range LPIPS expects; all images must share one size."""
    if len(images) < 2:
        raise MetricInputError(f"diversity needs at least 2 images of one prompt, got {len(images)}; generate more "
                               "seeds")
    rgb = [open_rgb(image) for image in images]
    sizes = sorted({image.size for image in rgb})
    if len(sizes) > 1:
        raise MetricInputError(f"diversity needs images of one size, got sizes {sizes}; generate them at one "
                               "resolution")
    array = np.stack([np.asarray(image) for image in rgb]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
