"""Z-Image: a Qwen3 text encoder whose second-to-last hidden state conditions the transformer, nothing dropped.

diffusers' ``ZImagePipeline`` renders each prompt with the tokenizer's chat
template (one user message, generation prompt, thinking on), which gives
``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n``; it keeps
every position (``drop_idx`` 0), pads to 512 tokens and returns one tensor per
prompt without its padding. A placeholder must stay one id inside that text.
ai-toolkit's ``zimage`` arch (``:turbo`` and other tags after a colon are cut
by ai-toolkit) trains it; its prompt embeddings reach the transformer without
a detach, so only SDTrainer's no-grad prompt branch stands in the gradient's way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .family import ModelFamily

# What the tokenizer's chat template renders for ZImagePipeline._encode_prompt (checked by tests/test_models.py).
PROMPT_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
# diffusers' ZImagePipeline max_sequence_length (the template counts).
MAX_LENGTH = 512
# ai-toolkit's repo for the tokenizer when name_or_path is a single .safetensors (z_image.py SINGLE_FILE_EXTRAS_REPO).
SINGLE_FILE_EXTRAS_REPO = "Tongyi-MAI/Z-Image-Turbo"


class ZImageFamily(ModelFamily):
    """Qwen3ForCausalLM under ``text_encoder``, the tokenizer under ``tokenizer``."""

    def aitk_tokenizer_source(self, model: Mapping[str, Any]) -> tuple[str, str]:
        # ZImageModel.load_transformer/load_model: the extras path (default name_or_path; the hub repo when it is
        # a single .safetensors), unless name_or_path is a local folder that holds the text encoder itself.
        name = str(model.get("name_or_path", ""))
        extras = str(model.get("extras_name_or_path") or name)
        if name.endswith(".safetensors") and extras == name:
            extras = SINGLE_FILE_EXTRAS_REPO
        if os.path.isdir(os.path.join(name, "text_encoder")):
            extras = name
        return extras, "tokenizer"

    def prefix_cache_refusal(self) -> str | None:
        return ("the prefix cache builds Qwen-Image's padded, masked encoder output; Z-Image takes one unpadded "
                "tensor per prompt from the encoder's second-to-last layer, which it does not build yet")


Z_IMAGE = ZImageFamily(
    name="zimage",
    label="Z-Image",
    aitk_arch="zimage",
    zero_prior_arch="zimage_zero_prior",
    pipeline_class="ZImagePipeline",
    pipeline_classes=("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
    prompt_template=PROMPT_TEMPLATE,
    drop_idx=0,
    max_length=MAX_LENGTH,
    cfg_argument="guidance_scale",
)
