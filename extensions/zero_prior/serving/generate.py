"""Generate images from a pipeline folder and an optional zero-prior LoRA.

One small function shared by the CLI, the demo and the evaluation, so
that every image the project shows was made the same way: the project's
loader, a seeded CPU generator (same image on every device for a seed), and
diffusers' own progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..devices import default_device
from ..errors import ConfigError, PipelineError
from ..fileio import atomic_file
from ..models import family_for_pipeline
from ..weights.loader import LoadResult, load_zero_prior
from ..weights.package import open_weights


def load_pipeline(model: str | os.PathLike[str], device: str | None = None, dtype: torch.dtype | None = None) -> Any:
    """Load a pipeline of a supported family by hub name or local folder (offline folders work); bf16 on a GPU.

    A folder that does not exist, or a pipeline diffusers cannot load (files
    missing, a hub name not in the cache while offline), is a ``PipelineError``
    naming it, before anything heavy happens where it can be.
    """
    name = str(model)
    # A hub name is NAME or OWNER/NAME; anything else is a folder.
    looks_local = os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name
    folder = Path(name).expanduser()
    if (looks_local or folder.exists()) and not (folder / "model_index.json").is_file():
        what = "no such folder" if not folder.exists() else "not a diffusers pipeline folder (no model_index.json)"
        raise PipelineError(f"{name}: {what}; pass a pipeline folder (with model_index.json) or a hub name such as "
                            "Qwen/Qwen-Image")
    device = default_device(device)
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    from diffusers import DiffusionPipeline

    try:  # the class comes from the folder's model_index.json, so any supported family loads
        pipe = DiffusionPipeline.from_pretrained(name, torch_dtype=dtype)
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PipelineError(f"{name}: diffusers cannot load it as a pipeline ({reason}); pass a complete pipeline "
                            "folder, or download the model first (hf download NAME) when offline") from error
    family_for_pipeline(pipe)  # a pipeline of a family zero-prior does not support is refused here
    return pipe.to(device)


def generate_images(
    pipe: Any,
    prompts: list[str],
    seed: int = 0,
    steps: int = 20,
    height: int = 512,
    width: int = 512,
    true_cfg_scale: float = 1.0,
    negative_prompt: str | None = None,
    image: Any = None,
    output_type: str = "pil",
) -> list[Any]:
    """One PIL image per prompt, each from ``seed`` (so columns of a grid share noise).

    Prompts are generated one by one: diffusers pairs masks with the wrong
    prompts when several prompts share a call with ``num_images_per_prompt > 1``.
    ``true_cfg_scale`` goes to the family's guidance argument (Qwen-Image's
    ``true_cfg_scale``, Z-Image's and FLUX.2 [klein]'s ``guidance_scale``); above
    1 it uses ``negative_prompt`` (as the family's pipeline takes it). ``image``
    is the control image (or list of them) an edit family (Qwen-Image-Edit-Plus)
    edits; it is required there. ``output_type="np"`` gives each image as the
    pipeline's float array in [0, 1] instead, before 8-bit rounding.

    Example::

        generate_images(pipe, ["a photo of <zwx>"], seed=1, steps=4, height=64, width=64)
    """
    if output_type not in ("pil", "np"):
        raise ConfigError(f"output_type must be 'pil' (PIL images) or 'np' (float arrays), got {output_type!r}")
    family = family_for_pipeline(pipe)
    if family.control_images and image is None:
        raise ConfigError(f"{family.label} edits an image: pass the control image (image=, a PIL image or a list)")
    arguments = {family.cfg_argument: true_cfg_scale, **({"image": image} if image is not None else {}),
                 **family.negative_prompt_arguments(pipe, negative_prompt)}
    images = []
    for prompt in prompts:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        output = pipe(
            prompt=prompt,
            **arguments,
            num_inference_steps=steps,
            height=height,
            width=width,
            generator=generator,
            output_type=output_type,
        )
        images.append(output.images[0])
    return images


def generate_to_file(
    model: str | os.PathLike[str],
    prompt: str,
    out: str | os.PathLike[str],
    lora: str | os.PathLike[str] | None = None,
    lora_scale: float = 1.0,
    **options: Any,
) -> LoadResult | None:
    """Load ``model`` (and ``lora`` with the project's loader), generate one image, save it.

    The LoRA and the output path are checked before the model loads, so a
    typo costs seconds, not a model load; the image is written atomically.
    """
    out = Path(out)
    blocking = next((parent for parent in out.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"{out}: {blocking} is a file, not a folder; choose another output path")
    if lora:
        with open_weights(lora):
            pass
    pipe = load_pipeline(model)
    result = load_zero_prior(pipe, lora, lora_scale=lora_scale) if lora else None
    [image] = generate_images(pipe, [prompt], **options)
    with atomic_file(out) as tmp_name:
        image.save(tmp_name, format=out.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG")
    return result
