"""``QwenImageEditPlusZeroPriorModel``: ai-toolkit's Qwen-Image-Edit-Plus model with the prompt's gradient kept.

ai-toolkit's ``QwenImageEditPlusModel.get_noise_prediction`` builds the
transformer's ``encoder_hidden_states`` inside ``torch.no_grad`` (with the
control latents) and detaches them at the call, so no gradient reaches the
placeholder. This subclass (arch ``qwen_image_edit_plus_zero_prior``) puts the
same embeddings back, attached, with ``prompt_reattached``; the prompts are
encoded by ai-toolkit's own ``get_prompt_embeds`` with their control images,
through the processor's tokenizer, which the trainer registers the token on
too (``placeholder_tokenizers``).

Latents are cached under ``qwen_image_edit_plus``'s name, as a baseline run
caches them, so the two share the cache; the base model version stays the
inherited ``qwen_image``.
"""

from __future__ import annotations

from typing import Any

import torch
from extensions_built_in.diffusion_models.qwen_image import QwenImageEditPlusModel
from toolkit.prompt_utils import PromptEmbeds

from ....models.qwen_image_edit_plus import QWEN_IMAGE_EDIT_PLUS
from .placeholder_model import PlaceholderModelMixin, prompt_reattached


class QwenImageEditPlusZeroPriorModel(PlaceholderModelMixin, QwenImageEditPlusModel):
    """Qwen-Image-Edit-Plus for placeholder training; set up by ``ZeroPriorTrainer.hook_after_model_load``."""

    arch = QWEN_IMAGE_EDIT_PLUS.zero_prior_arch
    family = QWEN_IMAGE_EDIT_PLUS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # BaseModel.__init__ leaves this None, and ai-toolkit would key the latent cache by our arch instead.
        self.latent_space_version = QWEN_IMAGE_EDIT_PLUS.aitk_arch

    def get_noise_prediction(
        self,
        latent_model_input: torch.Tensor,
        timestep: torch.Tensor,
        text_embeddings: PromptEmbeds,
        batch: Any = None,  # named: ai-toolkit passes the batch (control images) only to a signature that has it
        **kwargs: Any,
    ) -> torch.Tensor:
        """ai-toolkit's prediction (control latents and all), with the prompt embeddings reaching it undetached."""
        embeds = text_embeddings.text_embeds
        if not (torch.is_grad_enabled() and embeds.requires_grad):
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings, batch=batch, **kwargs)
        attached = embeds.to(self.device_torch, self.torch_dtype)
        with prompt_reattached(self.transformer, attached, "encoder_hidden_states", "QwenImageEditPlusModel"):
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings, batch=batch, **kwargs)
