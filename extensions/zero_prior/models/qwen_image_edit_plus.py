"""Qwen-Image-Edit-Plus (2509, 2511): Qwen-Image's encoder, but every prompt is encoded with its control images.

diffusers' ``QwenImageEditPlusPipeline`` puts ``Picture N: <|vision_start|>
<|image_pad|><|vision_end|>`` for each control image in front of the user's
instruction, inside a chat template with its own system prompt, and drops the
first 64 token positions (everything up to the user turn) of the encoder's last
hidden state; the processor widens each ``<|image_pad|>`` to the image's
patch count, and the vision tower's features replace those positions. So the
text a placeholder must survive is the template with one image in front of
the instruction (a second image adds the same prefix again; what touches the
instruction is always ``<|vision_end|>``).

The pipeline tokenizes through its processor's tokenizer
(``pipe.processor.tokenizer``), a separate object from ``pipe.tokenizer``:
``tokenizers`` names both, and a token is registered on both or on neither.

Three things zero-prior does for Qwen-Image cannot work here, and the config
rules refuse them: the prefix cache (the positions before the token hold the
control image), the pivot (prompts are encoded once per caption text, but
here each caption's embedding depends on its control image), and batches of
more than one (ai-toolkit's Edit-Plus model stops on them, baseline included).
ai-toolkit's ``qwen_image_edit_plus:2511`` is the same arch (it cuts the tag).
"""

from __future__ import annotations

from typing import Any

from .qwen_image import QwenImageFamily

# diffusers' QwenImageEditPlusPipeline.prompt_template_encode with its image prefix for one control image
# (_get_qwen_prompt_embeds) in front of the instruction; checked against the pipeline by tests/test_models.py.
PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
# QwenImageEditPlusPipeline.prompt_template_encode_start_idx: the system turn and "<|im_start|>user\n".
PROMPT_TEMPLATE_START_IDX = 64
TOKENIZER_MAX_LENGTH = 1024


class QwenImageEditPlusFamily(QwenImageFamily):
    """Qwen-Image's text encoder with its vision tower, prompts tokenized by the processor's tokenizer."""

    def tokenizers(self, pipe: Any) -> list[Any]:
        primary, processor = pipe.tokenizer, pipe.processor.tokenizer
        return [primary] if processor is primary else [primary, processor]

    def prefix_cache_refusal(self) -> str | None:
        return ("the positions before the token hold the control image (its vision features and its patch count "
                "differ for every training pair), so there is no text prefix to encode once")

    def pivot_refusal(self) -> str | None:
        return ("the pivot encodes each caption once, keyed by its text, but Qwen-Image-Edit-Plus encodes a caption "
                "together with its control images, so one caption has a different embedding for every pair")

    def batch_size_refusal(self) -> str | None:
        return ("ai-toolkit's QwenImageEditPlusModel.get_prompt_embeds takes a batch's control images as one set "
                "for all its prompts and stops at the first step ('Number of prompts must match number of control "
                "image sets'), the baseline too")


QWEN_IMAGE_EDIT_PLUS = QwenImageEditPlusFamily(
    name="qwen_image_edit_plus",
    label="Qwen-Image-Edit-Plus",
    aitk_arch="qwen_image_edit_plus",
    zero_prior_arch="qwen_image_edit_plus_zero_prior",
    pipeline_class="QwenImageEditPlusPipeline",
    pipeline_classes=("QwenImageEditPlusPipeline",),
    prompt_template=PROMPT_TEMPLATE,
    drop_idx=PROMPT_TEMPLATE_START_IDX,
    max_length=TOKENIZER_MAX_LENGTH,
    control_images=True,
)
