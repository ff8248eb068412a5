"""``QwenImageZeroPriorModel``: ai-toolkit's Qwen-Image model with the gradient path to the prompt kept open.

ai-toolkit's ``QwenImageModel.get_noise_prediction`` hands the transformer
``encoder_hidden_states=enc_hs.detach()``, so no gradient ever reaches the
text encoder's input, and the placeholder vector would never train. This
subclass (its own arch, ``qwen_image_zero_prior``, chosen by the trainer when
``train.train_placeholder_token`` is on) lets the transformer receive the same
prompt embeddings, but still attached to the autograd graph whenever they
carry one; everything else it adds comes from ``PlaceholderModelMixin``.

Latents are cached under ``qwen_image``'s name, so a baseline run and a
zero-prior run over the same data share one latent cache.
"""

from __future__ import annotations

from typing import Any

import torch
from extensions_built_in.diffusion_models.qwen_image import QwenImageModel
from toolkit.prompt_utils import PromptEmbeds

from ....models.qwen_image import QWEN_IMAGE
from .placeholder_model import PlaceholderModelMixin, prompt_reattached


class QwenImageZeroPriorModel(PlaceholderModelMixin, QwenImageModel):
    """Qwen-Image for placeholder training; set up by ``ZeroPriorTrainer.hook_after_model_load``."""

    arch = QWEN_IMAGE.zero_prior_arch
    family = QWEN_IMAGE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # BaseModel.__init__ sets this instance attribute to None (so the cache would be keyed by our arch).
        self.latent_space_version = QWEN_IMAGE.aitk_arch

    def get_base_model_version(self) -> str:
        return QWEN_IMAGE.aitk_arch

    def get_noise_prediction(
        self,
        latent_model_input: torch.Tensor,
        timestep: torch.Tensor,
        text_embeddings: PromptEmbeds,
        **kwargs: Any,
    ) -> torch.Tensor:
        """ai-toolkit's prediction, with the prompt embeddings reaching the transformer undetached.

        The parent detaches ``encoder_hidden_states`` right at the transformer
        call. Rather than copy its packing code, a one-call forward pre-hook
        puts back the same values still attached to the graph. Without a graph
        (sampling, or the toggle off) the parent runs untouched.
        """
        embeds = text_embeddings.text_embeds
        if not (torch.is_grad_enabled() and embeds.requires_grad):
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings, **kwargs)
        attached = embeds.to(self.device_torch, self.torch_dtype)
        with prompt_reattached(self.transformer, attached, "encoder_hidden_states", "QwenImageModel"):
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings, **kwargs)
