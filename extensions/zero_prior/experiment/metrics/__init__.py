"""Measurements of generated images, one kind per module; nothing here generates images.

- ``image_stats``: sharpness, RMS contrast, mean brightness (numpy only).
- ``similarity``: CLIP-T, CLIP-I (CLIP) and subject fidelity (DINOv2), transformers models by name or path.
- ``diversity``: mean pairwise LPIPS within a prompt (the ``lpips`` package).

A metric that cannot be computed raises ``errors.MetricUnavailableError`` with
the reason; the caller records it as missing. No metric ever falls back to an
approximation or to other weights. Importing this package is cheap: the
default model names below are all it defines.
"""

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DINO = "facebook/dinov2-base"
