"""Qwen-Image: Qwen2.5-VL text encoder, Qwen2 tokenizer, a chat template whose first 34 positions are dropped.

diffusers' ``QwenImagePipeline`` wraps every prompt in a chat template with a
system prompt and drops the first 34 token positions of the encoder's last
hidden state (after the final norm). A placeholder token is only safe if it
stays one id *inside* that template. Qwen-Image-2512 (ai-toolkit's
``qwen_image:2512``) is the same family: ai-toolkit cuts the arch at the colon.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

from .family import ModelFamily

# Copied from diffusers' QwenImagePipeline (prompt_template_encode); checked
# against the installed pipeline by tests/test_models.py.
PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, "
    "texture, quantity, text, spatial relationships of the objects and "
    "background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# Number of leading template token positions the pipeline drops.
PROMPT_TEMPLATE_START_IDX = 34
# diffusers' QwenImagePipeline.tokenizer_max_length.
TOKENIZER_MAX_LENGTH = 1024


class QwenImageFamily(ModelFamily):
    """Qwen2.5-VL's language model, run with explicit multimodal rotary positions."""

    def aitk_tokenizer_source(self, model: Mapping[str, Any]) -> tuple[str, str]:
        # QwenImageModel.load_model: the extras path (default name_or_path; the hub repo when it is a single
        # .safetensors), unless name_or_path is a local folder that holds the text encoder itself.
        name = str(model.get("name_or_path", ""))
        extras = str(model.get("extras_name_or_path") or name)
        if extras.endswith(".safetensors"):
            extras = "Qwen/Qwen-Image"
        if os.path.isdir(os.path.join(name, "text_encoder")):
            extras = name
        return extras, "tokenizer"

    def prefix_cache_refusal(self) -> str | None:
        return None

    def decoder(self, text_encoder: nn.Module) -> nn.Module:
        return text_encoder.model.language_model

    def hidden_states(
        self, text_encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, past: Any
    ) -> torch.Tensor:
        # Through Qwen2_5_VLModel so the input embedding (and the splice hook) runs; explicit
        # positions bypass its stateful rope_deltas; lm_head is skipped, its logits are unused.
        import torch

        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        positions = positions.view(1, 1, -1).expand(3, input_ids.shape[0], -1)
        output = text_encoder.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=past is not None,
        )
        return output.last_hidden_state


QWEN_IMAGE = QwenImageFamily(
    name="qwen_image",
    label="Qwen-Image",
    aitk_arch="qwen_image",
    zero_prior_arch="qwen_image_zero_prior",
    pipeline_class="QwenImagePipeline",
    pipeline_classes=("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
    prompt_template=PROMPT_TEMPLATE,
    drop_idx=PROMPT_TEMPLATE_START_IDX,
    max_length=TOKENIZER_MAX_LENGTH,
)
