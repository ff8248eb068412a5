"""``QwenImageZeroPriorModel``: ai-toolkit's Qwen-Image model with the gradient path to the prompt kept open.

ai-toolkit's ``QwenImageModel.get_noise_prediction`` hands the transformer
``encoder_hidden_states=enc_hs.detach()``, so no gradient ever reaches the
text encoder's input, and the placeholder vector would never train. This
subclass (its own arch, ``qwen_image_zero_prior``, chosen by the trainer when
``train.train_placeholder_token`` is on) changes three things and nothing else:

- the transformer receives the same prompt embeddings, but still attached to
  the autograd graph whenever they carry one;
- prompts are expanded for multi-vector placeholders before encoding, and
  encoded through the trainer's ``PrefixCache`` while the vector trains
  (the positions before the token are computed once per prefix) or looked up
  in ``FrozenPrompts`` after the pivot (the text encoder is gone by then);
- LoRA files are written through ``format.save_lora_file`` so every save
  carries the placeholder record in its metadata.

Latents are cached under ``qwen_image``'s name, so a baseline run and a
zero-prior run over the same data share one latent cache.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from extensions_built_in.diffusion_models.qwen_image import QwenImageModel
from toolkit.accelerator import unwrap_model
from toolkit.prompt_utils import PromptEmbeds

from ..format import ZeroPriorMetadata, save_lora_file
from ..prefix_cache import PrefixCache
from ..tokens import RegisteredToken, expand_prompt
from .pivot import FrozenPrompts
from .settings import QWEN_IMAGE_ARCH, ZERO_PRIOR_ARCH


class QwenImageZeroPriorModel(QwenImageModel):
    """Qwen-Image for placeholder training; set up by ``ZeroPriorTrainer.hook_after_model_load``."""

    arch = ZERO_PRIOR_ARCH

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # BaseModel.__init__ sets this instance attribute to None (so the cache would be keyed by our arch).
        self.latent_space_version = QWEN_IMAGE_ARCH
        self.placeholder_tokens: list[RegisteredToken] = []
        # Set by the trainer: builds the placeholder record (current vectors, step) for each save.
        self.placeholder_record: Callable[[], ZeroPriorMetadata] | None = None
        # Set by the trainer: the gradient-carrying encode while the vector trains, if enabled ...
        self.prefix_cache: PrefixCache | None = None
        # ... and every prompt's embeddings from the pivot on.
        self.frozen_prompts: FrozenPrompts | None = None

    def get_base_model_version(self) -> str:
        return QWEN_IMAGE_ARCH

    def get_prompt_embeds(self, prompt: str | list[str]) -> PromptEmbeds:
        """Encode with each multi-vector placeholder expanded to its consecutive entries.

        After the pivot the prompts come from ``frozen_prompts`` (keyed as
        ai-toolkit asks for them); while the vector trains, gradient-carrying
        encodes go through ``prefix_cache``; anything else (sampling, static
        prompts) takes ai-toolkit's own path.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if self.frozen_prompts is not None:
            return self.frozen_prompts.lookup(prompts, self.device_torch)
        expanded = [expand_prompt(text, self.placeholder_tokens) for text in prompts]
        if self.prefix_cache is None or not torch.is_grad_enabled():
            return super().get_prompt_embeds(expanded)
        if self.pipeline.text_encoder.device != self.device_torch:
            self.pipeline.text_encoder.to(self.device_torch)
        embeds, mask = self.prefix_cache.encode(expanded, device=self.device_torch)
        if mask is None:  # as the parent: ai-toolkit always carries a mask
            mask = torch.ones(embeds.shape[:2], device=embeds.device, dtype=torch.int64)
        return PromptEmbeds(embeds, attention_mask=mask)

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

        def reattach(module: torch.nn.Module, args: tuple, call_kwargs: dict) -> tuple[tuple, dict]:
            detached = call_kwargs["encoder_hidden_states"]
            if detached.shape != attached.shape:
                raise RuntimeError(
                    f"zero-prior: the transformer got encoder_hidden_states of shape {list(detached.shape)}, "
                    f"expected {list(attached.shape)}; this ai-toolkit version changed QwenImageModel"
                )
            return args, {**call_kwargs, "encoder_hidden_states": attached}

        handle = unwrap_model(self.transformer).register_forward_pre_hook(reattach, with_kwargs=True)
        try:
            return super().get_noise_prediction(latent_model_input, timestep, text_embeddings, **kwargs)
        finally:
            handle.remove()

    def save_lora(self, state_dict: dict[str, torch.Tensor], output_path: str, metadata: dict[str, str]) -> None:
        """Write the LoRA with the placeholder record; ai-toolkit's ``save_weights`` calls this."""
        record = self.placeholder_record() if self.placeholder_record is not None else None
        save_lora_file(output_path, state_dict, metadata, zero_prior=record)


AI_TOOLKIT_MODELS = [QwenImageZeroPriorModel]
