"""Cog trainer: a zip of images -> a Qwen-Image LoRA with a zero-prior token, as ``weights.zip``.

Only the inputs are declared here; ``zero_prior.hosted.train_weights`` runs
the job through ai-toolkit's own ``run.py`` with this extension.
"""

from __future__ import annotations

import tempfile

from cog import BaseModel, Input, Path
from zero_prior.serving.hosted import train_weights


class TrainingOutput(BaseModel):
    """Replicate's trainer convention: the weights file predictions take as replicate_weights."""

    weights: Path


def train(
    input_images: Path = Input(
        description="zip of training images, optionally with same-named .txt captions ([trigger] marks the subject)"),
    steps: int = Input(description="Training steps", default=1000, ge=1, le=10000),
    learning_rate: float = Input(description="LoRA learning rate", default=1e-4, ge=1e-7, le=1e-2),
    rank: int = Input(description="LoRA rank (alpha = rank)", default=16, ge=1, le=128),
    resolution: int = Input(description="Training resolution in pixels", default=768, ge=64, le=2048),
    train_placeholder_token: bool = Input(
        description="true: train a brand-new near-zero token; false: baseline LoRA, `token` a plain trigger word",
        default=True),
    token: str = Input(description="The placeholder token (or, for the baseline, the trigger word)", default="<zwx>"),
) -> TrainingOutput:
    """Train and return weights.zip (lora/lora_weights.safetensors + meta.json)."""
    result = train_weights(input_images, tempfile.mkdtemp(prefix="zero_prior_weights_"), steps=steps,
                           learning_rate=learning_rate, rank=rank, resolution=resolution,
                           train_placeholder_token=train_placeholder_token, token=token)
    print(result.log)
    print(f"trained on {result.images} images; weights: {result.weights}")
    return TrainingOutput(weights=Path(result.weights))
