"""The model families zero-prior supports, one module each; look one up by name, ai-toolkit arch or pipeline.

Importing this package loads neither torch nor a model library (the config
checks, the CLI and ai-toolkit's UI read it): torch is imported when a family
runs its encoder, diffusers when a family's pipeline class is asked for.
"""

from __future__ import annotations

from typing import Any

from ..errors import PipelineError
from .family import ModelFamily, base_arch
from .flux2_klein import FLUX2_KLEIN
from .qwen_image import QWEN_IMAGE
from .qwen_image_edit_plus import QWEN_IMAGE_EDIT_PLUS
from .z_image import Z_IMAGE

FAMILIES: tuple[ModelFamily, ...] = (QWEN_IMAGE, Z_IMAGE, QWEN_IMAGE_EDIT_PLUS, FLUX2_KLEIN)
FAMILY_NAMES = tuple(family.name for family in FAMILIES)
DEFAULT_FAMILY = QWEN_IMAGE


def family_named(name: str) -> ModelFamily:
    """The family called ``name`` (as files record it)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise PipelineError(f"unknown model family {name!r}; use one of {', '.join(f.name for f in FAMILIES)}")


def family_for_arch(arch: str | None) -> ModelFamily | None:
    """The family of an ai-toolkit arch (``qwen_image``, ``qwen_image:2512``, or our own arch); None if unsupported.

    ai-toolkit cuts a tag after a colon (``ModelConfig``), so ``arch: qwen_image:2512`` trains Qwen-Image and
    ``qwen_image_edit_plus:2511`` Qwen-Image-Edit-Plus; ``base_arch`` is the one place zero-prior does the same.

    >>> family_for_arch("qwen_image:2512").name, family_for_arch("qwen_image_edit_plus:2511").name
    ('qwen_image', 'qwen_image_edit_plus')
    """
    base = base_arch(str(arch)) if arch is not None else None
    return next((f for f in FAMILIES
                 if base in (f.aitk_arch, f.zero_prior_arch, *f.other_aitk_archs, *f.other_zero_prior_archs)), None)


def family_for_pipeline(pipe: Any) -> ModelFamily:
    """The family of a diffusers pipeline object; a pipeline of no supported family is refused."""
    for family in FAMILIES:
        if family.accepts(pipe):
            return family
    supported = ", ".join(name for f in FAMILIES for name in f.pipeline_classes)
    raise PipelineError(f"{type(pipe).__name__} is not a pipeline zero-prior supports; use one of {supported}")


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "FAMILY_NAMES", "ModelFamily", "family_for_arch", "family_for_pipeline",
           "family_named"]
