"""The ComfyUI node "Load zero-prior LoRA": MODEL, CLIP and a file from ``loras`` in, MODEL and CLIP out.

Thin: the choices come from ComfyUI's ``loras`` folders (``.safetensors``
and ``weights.zip`` packages), the work from ``loading``.
"""

from __future__ import annotations

import logging
from typing import Any

import folder_paths

from .loading import load_zero_prior_lora

logger = logging.getLogger(__name__)
LORA_FOLDER = "loras"
PACKAGE_EXTENSIONS = {".zip"}  # weights.zip packages next to the .safetensors ComfyUI lists itself


def lora_choices() -> list[str]:
    """Every LoRA ComfyUI lists plus the weights.zip packages in the same folders."""
    names = set(folder_paths.get_filename_list(LORA_FOLDER))
    for folder in folder_paths.get_folder_paths(LORA_FOLDER):
        files, _ = folder_paths.recursive_search(folder, excluded_dir_names=[".git"])
        names.update(folder_paths.filter_files_extensions(files, PACKAGE_EXTENSIONS))
    return sorted(names)


class LoadZeroPriorLora:
    """Applies a zero-prior LoRA to MODEL and teaches CLIP its placeholder token (Qwen-Image, Qwen-Image-Edit-Plus)."""

    DESCRIPTION = ("Loads a LoRA trained with zero-prior: the LoRA on the diffusion model, and its placeholder token "
                   "(e.g. <zwx>) with the learned vector on the text encoder. Write the token in your prompt as it "
                   "was trained, without embedding: syntax.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The diffusion model with the LoRA.", "The text encoder that knows the token.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Qwen-Image's diffusion model."}),
                "clip": ("CLIP", {"tooltip": "Qwen-Image's text encoder (Load CLIP, type qwen_image)."}),
                "lora_name": (lora_choices(), {"tooltip": "The zero-prior .safetensors or weights.zip."}),
                "strength_model": ("FLOAT", {**strength, "tooltip": "LoRA strength (1.0 as trained)."}),
                "strength_token": ("FLOAT", {**strength, "tooltip": "Multiplies the token's vector (1.0 as "
                                             "trained, 0 about where training started)."}),
            }
        }

    def load(self, model: Any, clip: Any, lora_name: str, strength_model: float,
             strength_token: float) -> tuple[Any, Any]:
        path = folder_paths.get_full_path_or_raise(LORA_FOLDER, lora_name)
        loaded = load_zero_prior_lora(model, clip, path, strength_model, strength_token)
        logger.info("zero-prior: %s: %d LoRA tensors at %s, tokens %s at %s", lora_name, loaded.lora_tensors,
                    strength_model, ", ".join(loaded.tokens), strength_token)
        return loaded.model, loaded.clip


NODE_CLASS_MAPPINGS = {"LoadZeroPriorLora": LoadZeroPriorLora}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadZeroPriorLora": "Load zero-prior LoRA"}
