"""Load a zero-prior file into ComfyUI's MODEL and CLIP: the LoRA through ComfyUI's own loader, the token as ours.

Reading and checking come first and change nothing: the file or weights.zip
(``weights.package.open_weights``: format version, checksum, finite vectors,
meta.json), its family (this ComfyUI has Qwen-Image's Qwen2.5-VL encoder,
which Qwen-Image-Edit-Plus shares; it has no Z-Image encoder), the CLIP
(Qwen-Image's tokenizer, the encoder's width against the file's hidden
size), every LoRA tensor against ComfyUI's key map for the MODEL (none may be
left over, each must fit its layer's shape) and the placeholders against the
tokenizer. Then the MODEL is cloned with the LoRA patched in
(``comfy.sd.load_lora_for_models``) and the CLIP is cloned with a tokenizer
of its own that knows the tokens (``tokenizer.with_placeholders``; ComfyUI's
``CLIP.clone`` shares the tokenizer object, so the input CLIP stays as it was).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import comfy.lora
import comfy.lora_convert
import comfy.model_base
import comfy.sd
import comfy.utils
import torch
from comfy.text_encoders.qwen_image import QwenImageTokenizer

from ..errors import FormatError, PlaceholderError
from ..models import FAMILY_NAMES, family_named
from ..weights.export import COMFYUI_NODE_FAMILIES
from ..weights.package import open_weights
from .tokenizer import PlaceholderTokenizer, with_placeholders

# The families whose files this ComfyUI can use (same Qwen2.5-VL encoder, same MMDiT LoRA keys).
COMFYUI_FAMILIES = COMFYUI_NODE_FAMILIES
# The key of Qwen-Image's encoder in ComfyUI's tokenizer output and text-encoder model.
ENCODER_KEY = "qwen25_7b"


@dataclass
class LoadedInComfyUI:
    """The node's outputs and what it did."""

    model: Any  # a ModelPatcher
    clip: Any  # a comfy.sd.CLIP
    lora_tensors: int
    tokens: list[str]


def load_zero_prior_lora(model: Any, clip: Any, path: str | os.PathLike[str], strength_model: float = 1.0,
                         strength_token: float = 1.0) -> LoadedInComfyUI:
    """New MODEL and CLIP with the zero-prior file at ``path`` applied; ``model`` and ``clip`` stay unchanged.

    Raises ``ZeroPriorError`` (shown in ComfyUI's error box) naming the file and
    the fix for a file that is not ours, another family, a CLIP that is not
    Qwen-Image's, a model of another width or a token clash.

    Example::

        loaded = load_zero_prior_lora(model, clip, "models/loras/my_subject.safetensors")
        tokens = loaded.clip.tokenize("a photo of <zwx>")
    """
    for name, value in (("strength_model", strength_model), ("strength_token", strength_token)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PlaceholderError(f"{name} must be a finite number, got {value!r}; 1.0 is as trained")
    with open_weights(path) as package:
        record, label = package.record, package.label
        if record is None:
            raise FormatError(f"{label} has no zero-prior metadata, so it is a plain LoRA (a baseline run or another "
                              "trainer's file); load it with ComfyUI's LoraLoaderModelOnly, or pick the file a "
                              "zero-prior training wrote")
        if record.family not in COMFYUI_FAMILIES:
            trained_for = family_named(record.family).label if record.family in FAMILY_NAMES else record.family
            raise FormatError(f"{label} was trained for {trained_for}; this node covers Qwen-Image and "
                              "Qwen-Image-Edit-Plus files (the Qwen2.5-VL encoder ComfyUI has): use it with "
                              "diffusers (load_zero_prior) instead")
        tokenizer = _qwen_image_tokenizer(clip, label)
        width, row_dtype = _encoder_embedding(clip, tokenizer)
        if width != record.hidden_size:
            raise FormatError(f"{label}: the placeholder vectors have hidden size {record.hidden_size} but this "
                              f"CLIP's text encoder has {width}; load the text encoder of the model the file was "
                              "trained for (Qwen-Image's Qwen2.5-VL 7B)")
        lora = comfy.utils.load_torch_file(str(package.lora_file), safe_load=True)
    check_lora(model, lora, label)
    family = family_named(record.family)
    new_tokenizer = with_placeholders(tokenizer, ENCODER_KEY, record.placeholders, float(strength_token), family,
                                      label, row_dtype)
    # --- everything is checked; the outputs are new objects, the inputs stay as they were ---
    new_model, _ = comfy.sd.load_lora_for_models(model, None, lora, float(strength_model), 0.0)
    new_clip = clip.clone()
    new_clip.tokenizer = new_tokenizer
    return LoadedInComfyUI(new_model, new_clip, len(lora), [p.token for p in record.placeholders])


def lora_patches(model: Any, lora: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    """ComfyUI's patches for ``lora`` on ``model`` (a ModelPatcher) and the LoRA tensors no patch used, sorted.

    The same mapping ``comfy.sd.load_lora_for_models`` does (the model's key
    map, ``convert_lora``, ``load_lora``), without its silent skipping.
    """
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    converted = comfy.lora_convert.convert_lora(lora)
    patches = comfy.lora.load_lora(converted, key_map, log_missing=False)
    used: set[str] = set()
    for patch in patches.values():
        used.update(getattr(patch, "loaded_keys", ()))
    return patches, sorted(set(converted) - used)


def check_lora(model: Any, lora: dict[str, torch.Tensor], label: str) -> None:
    """Refuse a MODEL that is not Qwen-Image, a tensor ComfyUI would skip, or one that does not fit its layer."""
    if not isinstance(getattr(model, "model", None), comfy.model_base.QwenImage):
        found = type(getattr(model, "model", model)).__name__
        raise FormatError(f"{label} is a Qwen-Image LoRA but this MODEL is {found}; load Qwen-Image's diffusion "
                          "model (Load Diffusion Model) and connect it here")
    patches, left = lora_patches(model, lora)
    if left:
        raise FormatError(f"{label}: {len(left)} of {len(lora)} LoRA tensors match no layer of this Qwen-Image "
                          f"MODEL (first: {left[0]!r}), so ComfyUI would skip them; use the file the training wrote")
    weights = model.model.state_dict()
    for key, patch in sorted(patches.items()):
        up, down = patch.weights[0], patch.weights[1]
        shape = tuple(weights[key].shape[:2])
        if (up.shape[0], down.shape[1]) != shape:
            raise FormatError(f"{label}: the LoRA for {key} is {up.shape[0]}x{down.shape[1]} but this MODEL's layer "
                              f"is {shape[0]}x{shape[1]}; the file was trained for another base model: load that one")


def _qwen_image_tokenizer(clip: Any, label: str) -> Any:
    tokenizer = getattr(clip, "tokenizer", None)
    base = tokenizer.base if isinstance(tokenizer, PlaceholderTokenizer) else tokenizer
    if not isinstance(base, QwenImageTokenizer):
        raise FormatError(f"{label} needs Qwen-Image's text encoder, but this CLIP's tokenizer is "
                          f"{type(base).__name__}; load qwen_2.5_vl_7b with Load CLIP, type qwen_image")
    return tokenizer


def _encoder_embedding(clip: Any, tokenizer: Any) -> tuple[int, torch.dtype]:
    """The width and dtype of the CLIP's Qwen2.5-VL input embedding.

    Read from the encoder when ComfyUI exposes it, else the tokenizer's declared embedding size in fp32; a
    dtype narrower than 16 bits (a quantized embedding) is not a dtype to round the vector to, so fp32 then.
    """
    encoder = getattr(getattr(clip, "cond_stage_model", None), ENCODER_KEY, None)
    try:
        embedding = encoder.transformer.get_input_embeddings()
        width, dtype = int(embedding.embedding_dim), embedding.weight.dtype
    except AttributeError:
        return int(getattr(tokenizer, ENCODER_KEY).embedding_size), torch.float32
    return width, dtype if dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
