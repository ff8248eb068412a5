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

# Named metric-model protocols: ``dreambooth`` is the DreamBooth paper's DINO ViT-S/16 for subject
# fidelity (its DINO numbers are comparable only with this one); ``dinov2`` the default.
PROTOCOLS = {
    "dinov2": {"clip_model": DEFAULT_CLIP, "dino_model": DEFAULT_DINO},
    "dreambooth": {"clip_model": DEFAULT_CLIP, "dino_model": "facebook/dino-vits16"},
}
