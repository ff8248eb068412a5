"""FLUX.2 [klein] (4B, 9B): a Qwen3 text encoder whose layers 9, 18 and 27 are stacked into the prompt embedding.

diffusers' ``Flux2KleinPipeline`` renders each prompt with the tokenizer's chat
template (one user message, generation prompt, thinking off), which gives
``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n
</think>\\n\\n``; it keeps every position (``drop_idx`` 0), pads to 512 tokens
and concatenates the hidden states after decoder layers 9, 18 and 27 along
the feature axis (three times the encoder width). A placeholder must stay one
id inside that text. The 4B model's encoder is Qwen3-4B (width 2560), the 9B
model's Qwen3-8B (width 4096); one family covers both, and the loader's
hidden-size check keeps a 4B file off a 9B pipeline.

Training through ai-toolkit (``flux2_klein_4b`` / ``flux2_klein_9b``) runs
zero-prior's subclass of ai-toolkit's own FLUX.2 model for that size (arch
``flux2_klein_4b_zero_prior`` / ``flux2_klein_9b_zero_prior``), which puts the
gradient back where ai-toolkit packs the prompt under ``torch.no_grad``. The
prefix cache is refused (``prefix_cache_refusal``): the prompt embedding is
three stacked encoder layers, and the cache keeps the last one only.
Loading a zero-prior file into ``Flux2KleinPipeline`` works like any family;
diffusers converts ai-toolkit's LoRA keys (BFL names, ``diffusion_model.``)
itself, exactly for the double and single blocks ai-toolkit trains by
default, but with the shift and scale halves swapped on the final layer's
modulation, so a LoRA on that layer is refused (``lora_refusal``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .family import ModelFamily, base_arch

# What the tokenizer's chat template renders for Flux2KleinPipeline._get_qwen3_prompt_embeds (enable_thinking
# False; checked by tests/test_models.py).
PROMPT_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
# diffusers' Flux2KleinPipeline max_sequence_length (the template counts).
MAX_LENGTH = 512
# The final layer's modulation in BFL names (ai-toolkit puts a LoRA there only with network.transformer_only:
# false), under either key prefix diffusers sends through its FLUX.2 LoRA converter.
AITK_PREFIX, PEFT_PREFIX = "diffusion_model.", "base_model.model."
FINAL_MODULATION = "final_layer.adaLN_modulation.1."
# The text encoder (and tokenizer) repo ai-toolkit 27a03a91 loads for each size (Flux2Klein*Model.flux2_klein_te_path).
AITK_TEXT_ENCODERS = {"flux2_klein_4b": "Qwen/Qwen3-4B", "flux2_klein_9b": "Qwen/Qwen3-8B"}


class Flux2KleinFamily(ModelFamily):
    """Qwen3ForCausalLM under ``text_encoder``, its tokenizer under ``tokenizer``; ``flux2_klein_9b`` is the 9B."""

    def negative_prompt_arguments(self, pipe: Any, negative_prompt: str | None) -> dict[str, Any]:
        # Flux2KleinPipeline takes no negative prompt text (it guides against ""), only its embeddings.
        import torch

        if negative_prompt is None:
            return {}
        with torch.no_grad():
            embeds, _ = pipe.encode_prompt(negative_prompt, device=pipe._execution_device)
        return {"negative_prompt_embeds": embeds}

    def lora_refusal(self, keys: list[str]) -> str | None:
        # diffusers reads peft-style keys (base_model.model.) through the same converter as ai-toolkit's.
        if not any(key.removeprefix(PEFT_PREFIX).removeprefix(AITK_PREFIX).startswith(FINAL_MODULATION)
                   for key in keys):
            return None
        return ("it holds a LoRA on ai-toolkit's final_layer.adaLN_modulation.1 (trained with "
                "network.transformer_only: false), which diffusers' FLUX.2 LoRA converter maps to norm_out.linear "
                "without swapping its shift and scale halves, so it would apply wrongly; train with "
                "transformer_only: true (ai-toolkit's default), which leaves that layer out")

    def prefix_cache_refusal(self) -> str | None:
        return ("FLUX.2 [klein]'s prompt embedding stacks the hidden states of encoder layers 9, 18 and 27, and "
                "zero-prior's prefix cache computes the last layer's only; set placeholder.prefix_cache: false "
                "(or leave it out)")

    def aitk_tokenizer_source(self, model: Mapping[str, Any]) -> tuple[str, str]:
        # ai-toolkit reads the tokenizer from the hub repo of the size's Qwen3 encoder, whatever name_or_path says.
        arch = base_arch(str(model.get("arch", self.aitk_arch)))
        return AITK_TEXT_ENCODERS.get(arch, AITK_TEXT_ENCODERS[self.aitk_arch]), ""


FLUX2_KLEIN = Flux2KleinFamily(
    name="flux2_klein",
    label="FLUX.2 [klein]",
    aitk_arch="flux2_klein_4b",
    zero_prior_arch="flux2_klein_4b_zero_prior",
    pipeline_class="Flux2KleinPipeline",
    # The inpaint pipeline's _get_qwen3_prompt_embeds is diffusers' "Copied from" Flux2KleinPipeline's.
    pipeline_classes=("Flux2KleinPipeline", "Flux2KleinInpaintPipeline"),
    prompt_template=PROMPT_TEMPLATE,
    drop_idx=0,
    max_length=MAX_LENGTH,
    cfg_argument="guidance_scale",
    other_aitk_archs=("flux2_klein_9b",),
    other_zero_prior_archs=("flux2_klein_9b_zero_prior",),
)
