"""FLUX.2 [klein] 4B and 9B: ai-toolkit's own FLUX.2 models with the prompt's gradient kept.

ai-toolkit's ``Flux2Model.get_noise_prediction`` packs the prompt embeddings
into the transformer's ``ctx`` inside ``torch.no_grad`` (with the image and
control packing), so no gradient reaches the placeholder. These subclasses
(arch ``flux2_klein_4b_zero_prior`` / ``flux2_klein_9b_zero_prior``, one per
size because ai-toolkit has one class per size) put the same embeddings back,
attached, with ``prompt_reattached``; packing a text sequence does not change
its values (``batched_prc_txt`` only adds position ids), so the attached
tensor is the embeddings cast as the parent casts ``ctx``.

Latents are cached under the size's own arch, as a baseline run caches them,
so the two share the cache; the base model version is the inherited one.
"""

from __future__ import annotations

from typing import Any

import torch
from extensions_built_in.diffusion_models.flux2.flux2_klein_model import Flux2Klein4BModel, Flux2Klein9BModel
from toolkit.prompt_utils import PromptEmbeds

from ....models.flux2_klein import FLUX2_KLEIN
from .placeholder_model import PlaceholderModelMixin, prompt_reattached


class _Flux2KleinPlaceholder(PlaceholderModelMixin):
    """What both sizes add to ai-toolkit's class; set up by ``ZeroPriorTrainer.hook_after_model_load``."""

    family = FLUX2_KLEIN
    aitk_arch: str  # the built-in arch of the size

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # BaseModel.__init__ leaves this None, and ai-toolkit would key the latent cache by our arch instead.
        self.latent_space_version = self.aitk_arch

    def get_noise_prediction(
        self,
        latent_model_input: torch.Tensor,
        timestep: torch.Tensor,
        text_embeddings: PromptEmbeds,
        guidance_embedding_scale: float,
        batch: Any = None,  # named: ai-toolkit passes the batch (control images) only to a signature that has it
        **kwargs: Any,
    ) -> torch.Tensor:
        """ai-toolkit's prediction (control images and all), with the prompt embeddings reaching it undetached."""
        embeds = text_embeddings.text_embeds
        if not (torch.is_grad_enabled() and embeds.requires_grad):
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings,
                                                guidance_embedding_scale, batch=batch, **kwargs)
        attached = embeds.to(self.device_torch, self.model.dtype)
        with prompt_reattached(self.transformer, attached, "ctx", "Flux2Model"):
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings,
                                                guidance_embedding_scale, batch=batch, **kwargs)


class Flux2Klein4BZeroPriorModel(_Flux2KleinPlaceholder, Flux2Klein4BModel):
    """FLUX.2 [klein] 4B (Qwen3-4B encoder) for placeholder training."""

    arch = FLUX2_KLEIN.zero_prior_arch_for(Flux2Klein4BModel.arch)
    aitk_arch = Flux2Klein4BModel.arch


class Flux2Klein9BZeroPriorModel(_Flux2KleinPlaceholder, Flux2Klein9BModel):
    """FLUX.2 [klein] 9B (Qwen3-8B encoder) for placeholder training."""

    arch = FLUX2_KLEIN.zero_prior_arch_for(Flux2Klein9BModel.arch)
    aitk_arch = Flux2Klein9BModel.arch
