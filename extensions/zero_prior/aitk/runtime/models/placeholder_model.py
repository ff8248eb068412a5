"""``PlaceholderModelMixin``: what every zero-prior model subclass adds to its ai-toolkit model class.

Mixed in before the ai-toolkit class (``class X(PlaceholderModelMixin, QwenImageModel)``), it

- expands multi-vector placeholders in prompts before encoding;
- encodes gradient-carrying prompts through the trainer's ``PrefixCache``
  while the vector trains (the positions before the token computed once per
  prefix), and looks prompts up in ``FrozenPrompts`` after the pivot (the
  text encoder is gone by then); anything else takes ai-toolkit's own path;
- writes LoRA files through ``weights.format.save_lora_file``, so every save
  carries the placeholder record in its metadata.

What is family-specific (where ai-toolkit cuts the gradient to the prompt)
stays in the family's own subclass; ``prompt_reattached`` is the one way
those subclasses put the gradient back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from toolkit.accelerator import unwrap_model
from toolkit.prompt_utils import PromptEmbeds

from ....errors import AiToolkitError
from ....models import ModelFamily
from ....placeholder.vocabulary import RegisteredToken, expand_prompt
from ....training.prefix_cache import PrefixCache
from ....weights.format import ZeroPriorRecord, save_lora_file
from ..pivot import FrozenPrompts


class PlaceholderModelMixin:
    """Placeholder state set by ``ZeroPriorTrainer.hook_after_model_load``; see the module docstring."""

    family: ModelFamily  # set by each subclass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placeholder_tokens: list[RegisteredToken] = []
        # Set by the trainer: builds the placeholder record (current vectors, step) for each save.
        self.record_builder: Callable[[], ZeroPriorRecord] | None = None
        # Set by the trainer: the gradient-carrying encode while the vector trains, if enabled ...
        self.prefix_cache: PrefixCache | None = None
        # ... and every prompt's embeddings from the pivot on.
        self.frozen_prompts: FrozenPrompts | None = None

    def placeholder_tokenizers(self) -> list[Any]:
        """Every tokenizer the model's pipeline encodes with (``ModelFamily.tokenizers``); the token goes on each."""
        return self.family.tokenizers(self.pipeline)

    def get_prompt_embeds(self, prompt: str | list[str], *args: Any, **kwargs: Any) -> PromptEmbeds:
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
            return super().get_prompt_embeds(expanded, *args, **kwargs)
        if self.pipeline.text_encoder.device != self.device_torch:
            self.pipeline.text_encoder.to(self.device_torch)
        embeds, mask = self.prefix_cache.encode(expanded, device=self.device_torch)
        if mask is None:  # as the parent: ai-toolkit always carries a mask
            mask = torch.ones(embeds.shape[:2], device=embeds.device, dtype=torch.int64)
        return PromptEmbeds(embeds, attention_mask=mask)

    def save_lora(self, state_dict: dict[str, torch.Tensor], output_path: str, metadata: dict[str, str]) -> None:
        """Write the LoRA with the placeholder record; ai-toolkit's ``save_weights`` calls this."""
        record = self.record_builder() if self.record_builder is not None else None
        save_lora_file(output_path, state_dict, metadata, record=record)


@contextmanager
def prompt_reattached(transformer: torch.nn.Module, attached: torch.Tensor, argument: str,
                      model: str) -> Iterator[None]:
    """In the block, the transformer's ``argument`` keyword becomes ``attached`` (the same values, with graph).

    ai-toolkit's models hand the transformer prompt embeddings that are
    detached (or built under ``torch.no_grad``), so no gradient reaches the
    placeholder. Rather than copy their packing code, a one-call forward
    pre-hook puts back the same tensor still attached to the graph; a shape
    other than ``attached``'s means ai-toolkit's ``model`` changed, and stops
    the step.
    """

    def reattach(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        detached = kwargs[argument]
        if detached.shape != attached.shape:
            raise AiToolkitError(
                f"zero-prior: the transformer got {argument} of shape {list(detached.shape)}, expected "
                f"{list(attached.shape)}; this ai-toolkit version changed {model}"
            )
        return args, {**kwargs, argument: attached}

    handle = unwrap_model(transformer).register_forward_pre_hook(reattach, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
