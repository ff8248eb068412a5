"""``ZImageZeroPriorModel``: ai-toolkit's Z-Image model for placeholder training.

ai-toolkit's ``ZImageModel`` hands the prompt embeddings to the transformer
without a detach, so once the trainer's grad branch encodes them the gradient
reaches the vector; this subclass only adds ``PlaceholderModelMixin`` and keeps
latents cached under ``zimage``'s name, shared with a baseline run.
"""

from __future__ import annotations

from typing import Any

from extensions_built_in.diffusion_models.z_image.z_image import ZImageModel

from ....models.z_image import Z_IMAGE
from .placeholder_model import PlaceholderModelMixin


class ZImageZeroPriorModel(PlaceholderModelMixin, ZImageModel):
    """Z-Image for placeholder training; set up by ``ZeroPriorTrainer.hook_after_model_load``."""

    arch = Z_IMAGE.zero_prior_arch
    family = Z_IMAGE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # BaseModel.__init__ leaves this None, and ai-toolkit would key the latent cache by our arch instead.
        self.latent_space_version = Z_IMAGE.aitk_arch

    def get_base_model_version(self) -> str:
        return Z_IMAGE.aitk_arch
