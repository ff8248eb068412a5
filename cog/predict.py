"""Cog predictor: Qwen-Image with a zero-prior ``weights.zip`` (LoRA + placeholder token).

Only the inputs are declared here; ``zero_prior.hosted.WeightsServer`` does
the work (and is tested without Docker). The base model comes from
``$ZERO_PRIOR_MODEL`` (default ``Qwen/Qwen-Image``).
"""

from __future__ import annotations

import tempfile

from cog import BasePredictor, Input, Path
from zero_prior.serving.hosted import WeightsServer


class Predictor(BasePredictor):
    """Qwen-Image kept in memory; each request may bring another weights.zip."""

    def setup(self) -> None:
        """Load the base pipeline once; weights packages are applied per request."""
        self.server = WeightsServer.from_model()

    def predict(
        self,
        prompt: str = Input(description="Prompt; write the trained token (e.g. <zwx>) where the subject goes"),
        replicate_weights: Path | None = Input(
            description="weights.zip from the trainer or `zero-prior export --format zip`", default=None),
        lora_scale: float = Input(description="LoRA strength", default=1.0, ge=-2.0, le=3.0),
        token_scale: float = Input(
            description="Placeholder vector strength: 0 = untrained token, 1 = as trained",
            default=1.0, ge=0.0, le=3.0),
        seed: int = Input(description="Random seed", default=0, ge=0),
        steps: int = Input(description="Denoising steps", default=30, ge=1, le=100),
        width: int = Input(description="Width in pixels (multiple of 16)", default=1024, ge=16, le=2048),
        height: int = Input(description="Height in pixels (multiple of 16)", default=1024, ge=16, le=2048),
        guidance: float = Input(
            description="True CFG scale (used with the negative prompt)", default=4.0, ge=1.0, le=20.0),
        negative_prompt: str = Input(description="Negative prompt; empty disables CFG", default=" "),
    ) -> Path:
        """Generate one PNG; the log lists the loaded placeholder and warns if the prompt lacks it."""
        result = self.server.predict(
            prompt, weights=replicate_weights, lora_scale=lora_scale, token_scale=token_scale, seed=seed,
            steps=steps, width=width, height=height, true_cfg_scale=guidance, negative_prompt=negative_prompt or None,
        )
        for line in result.log:
            print(line)
        out = Path(tempfile.mkdtemp(prefix="zero_prior_")) / "out.png"
        result.image.save(out)
        return out
