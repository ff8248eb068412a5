"""The tiny Qwen-Image-Edit-Plus: the tiny Qwen-Image plus the processor, as a ``QwenImageEditPlusPipeline`` folder.

Edit-Plus (2509, 2511) is Qwen-Image's architecture with the text encoder's
vision tower in use: the same transformer (with 2511's ``zero_cond_t``, the
control latents' timestep set to zero), Qwen2.5-VL text encoder and VAE
(narrower, see ``VAE_BASE_DIM``) as ``testbed.qwen_image``, and a ``Qwen2VLProcessor`` under ``processor/`` that
turns control images into vision patches. The processor's folder holds the
same real tokenizer files as ``tokenizer/`` (as the published model's does),
so it loads its own tokenizer object, on which a placeholder must be
registered too: a new token lands on id 151665 in both.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..models.qwen_image_edit_plus import QWEN_IMAGE_EDIT_PLUS
from . import qwen_image
from .tokenizer import qwen_tokenizer_dir

# Bump when the configs or files below change, so cached builds are redone.
BUILD_VERSION = "1"
# The pipeline VAE-encodes every control image at about 1024x1024 whatever its size; a VAE 4 wide at the top
# (Qwen-Image's tiny one is 16) halves what that costs on a CPU (about 13 s instead of 27 s here).
VAE_BASE_DIM = 4
# Qwen2.5-VL's preprocessor_config.json pixel bounds (min_pixels, max_pixels).
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
# The control image every tiny edit job's sample prompts use (make_subject_dataset's first image name).
FIRST_CONTROL = "000.png"


def _model_index() -> dict:
    from diffusers import __version__ as diffusers_version

    return {
        "_class_name": "QwenImageEditPlusPipeline",
        "_diffusers_version": diffusers_version,
        "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"],
    }


def _write_processor(folder: Path) -> None:
    """The real tokenizer files plus the processor's own config (image and video processors) in ``folder``."""
    from transformers import Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    qwen_image.copy_tokenizer(qwen_tokenizer_dir(), folder)
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(size=size),
                                 tokenizer=Qwen2Tokenizer.from_pretrained(folder),
                                 video_processor=Qwen2VLVideoProcessor())
    with tempfile.TemporaryDirectory() as staging:  # keep only the processor's config; the tokenizer files are real
        processor.save_pretrained(staging)
        shutil.copyfile(Path(staging) / "processor_config.json", folder / "processor_config.json")


def build(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight, real-architecture Qwen-Image-Edit-Plus pipeline folder and return its path.

    The processor loads a tokenizer object of its own (what the pipeline
    encodes prompts with), from the same files as ``tokenizer/``:

    >>> import tempfile
    >>> from diffusers import QwenImageEditPlusPipeline
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pipe = QwenImageEditPlusPipeline.from_pretrained(build(Path(tmp) / "tiny_edit", seed=0))
    >>> pipe.processor.tokenizer is pipe.tokenizer, len(pipe.processor.tokenizer), len(pipe.tokenizer)
    (False, 151665, 151665)
    """
    out = qwen_image.new_folder(out_dir)
    qwen_image.write_components(out, seed, vae_base_dim=VAE_BASE_DIM, zero_cond_t=True)
    _write_processor(out / "processor")
    (out / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n", encoding="utf-8")
    return out


def cache_inputs() -> dict[str, str]:
    """What this build depends on besides the seed: its version and the Qwen-Image build's."""
    return {**qwen_image.cache_inputs(), "build_version": BUILD_VERSION, "qwen_image": qwen_image.BUILD_VERSION}


def edit_job(process: dict, control: str) -> dict:
    """``process`` (a tiny ai-toolkit job) made a Qwen-Image-Edit-Plus job: arch, control folder, sample controls.

    Control latents are encoded at the target size (ai-toolkit's
    ``match_target_res``): at its default 1024x1024 each step would cost a CPU
    run tens of seconds. Each sample prompt gets ``control``'s ``000.png``.
    """
    process["model"]["arch"] = QWEN_IMAGE_EDIT_PLUS.aitk_arch
    process["model"]["model_kwargs"] = {"match_target_res": True}
    process["datasets"][0]["control_path"] = control
    prompts = process["sample"].pop("prompts")
    # ctrl_img_1, as ai-toolkit's examples: a sample's ctrl_img also counts as its ctrl_img_1, and its prompt is
    # then encoded with the image twice ("Picture 1", "Picture 2") while the transformer sees it once.
    process["sample"]["samples"] = [{"prompt": prompt, "ctrl_img_1": f"{control}/{FIRST_CONTROL}"}
                                    for prompt in prompts]
    return process
