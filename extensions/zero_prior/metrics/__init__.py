"""Measurements of generated images, one kind per module; nothing here generates images.

- ``image_stats``: sharpness, RMS contrast, mean brightness (numpy only).
- ``similarity``: CLIP-T, CLIP-I (CLIP) and subject fidelity (DINOv2), transformers models by name or path.
- ``diversity``: mean pairwise LPIPS within a prompt (the ``lpips`` package).

A metric that cannot be computed raises ``MetricUnavailableError`` with the
reason; the caller records it as missing. No metric ever falls back to an
approximation or to other weights.
"""

from __future__ import annotations

from ..errors import ZeroPriorError


class MetricUnavailableError(ZeroPriorError, RuntimeError):
    """A metric cannot be computed here (package or weights missing); the message says why and how to fix it."""


class MetricInputError(ZeroPriorError, ValueError):
    """Images or prompts given to a metric are unusable (type, shape, value range, count); the message says which."""
