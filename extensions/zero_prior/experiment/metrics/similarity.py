"""Embedding similarities: CLIP-T, CLIP-I (CLIP) and subject fidelity (DINOv2).

Every score is a plain cosine similarity between L2-normalised embeddings,
in [-1, 1], reported as is (no x100, no clipping at 0 as CLIPScore does), so
the numbers in a report can be recomputed from the definitions here:

- CLIP-T: cosine(CLIP text embedding of the prompt, CLIP image embedding), per image.
- CLIP-I: mean cosine of an image's CLIP embedding to every training image's.
- DINO: mean cosine of an image's DINOv2 CLS token (the last hidden state's
  first position, after the final layer norm) to every training image's;
  DINO features follow identity and shape more than CLIP's do, which is why
  DreamBooth-style evaluations use them for subject fidelity.

Models are loaded by hub name or local folder with transformers, strictly: a
model that cannot be loaded, or whose checkpoint lacks weights the model needs
(a CLIP without its text tower) or holds others, raises
``MetricUnavailableError`` with the reason instead of scoring with random weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from ...devices import default_device
from ...errors import MetricInputError, MetricUnavailableError
from . import DEFAULT_CLIP, DEFAULT_DINO
from .images import PilOrPath, open_rgb

DINO_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "vit")


def mean_cosine(embeddings: torch.Tensor, references: torch.Tensor) -> list[float]:
    """Per row of ``embeddings``: its mean cosine to all rows of ``references`` (both L2-normalised).

    >>> mean_cosine(torch.eye(2), torch.eye(2))
    [0.5, 0.5]
    """
    return [float(x) for x in (embeddings @ references.T).mean(dim=1)]


class _Scorer:
    """A model and its processor, loaded once by hub name or local folder and reused for every image."""

    kind = ""  # names the model in error messages

    def __init__(self, model: Any, processor: Any, name: str, device: str, batch_size: int = 16) -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.name = name
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def _load(cls, model_class: Any, processor_class: Any, name_or_path: str | os.PathLike[str],
              device: str | None, dtype: torch.dtype, batch_size: int, **model_kwargs: Any) -> Any:
        """Load strictly: any missing, unexpected or mismatched weight makes the metric unavailable."""
        name = str(name_or_path)
        try:
            model, info = model_class.from_pretrained(name, dtype=dtype, output_loading_info=True, **model_kwargs)
            processor = processor_class.from_pretrained(name)
        except (OSError, ValueError) as error:  # missing files, offline hub; no model_type in config.json
            raise MetricUnavailableError(_load_failure(cls.kind, name, error)) from error
        # Older checkpoints still hold buffers the model now computes itself (CLIP's position_ids): not weights.
        info = {**info, "unexpected_keys": sorted(set(info.get("unexpected_keys", ())) - _computed_buffers(model))}
        problems = [f"{len(info[key])} {label} weight(s) (e.g. {', '.join(sorted(map(str, info[key]))[:3])})"
                    for key, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                                       ("mismatched_keys", "size-mismatched")) if info.get(key)]
        if problems:
            raise MetricUnavailableError(
                f"{cls.kind} model {name!r} does not match {type(model).__name__}: {'; '.join(problems)}; those "
                "weights would be random, so no score is computed; give a complete checkpoint of that model")
        return cls(model, processor, name, default_device(device), batch_size)

    def _image_rows(
        self, images: Sequence[PilOrPath], features: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``features(pixel_values)`` over ``images`` in batches, L2-normalised, float32 on the CPU."""
        rows = []
        for batch in _batches(images, self.batch_size):
            inputs = self.processor(images=[open_rgb(i) for i in batch], return_tensors="pt")
            rows.append(features(inputs["pixel_values"].to(self.device, self.model.dtype)))
        return _normalised(rows)


class ClipScorer(_Scorer):
    """A CLIP model and its processor, for CLIP-T and CLIP-I.

    Example::

        clip = ClipScorer.load()
        clip.clip_t([image], ["a photo of a person on a beach"])  # -> [0.27]
    """

    kind = "CLIP"

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_CLIP,
        device: str | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> ClipScorer:
        """Load ``CLIPModel`` and ``CLIPProcessor`` from a hub name or a local folder."""
        from transformers import CLIPModel, CLIPProcessor

        return cls._load(CLIPModel, CLIPProcessor, name_or_path, device, dtype, batch_size)

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence[PilOrPath]) -> torch.Tensor:
        """L2-normalised image embeddings, ``[N, projection_dim]`` float32 on the CPU."""
        return self._image_rows(images, lambda pixels: _pooled(self.model.get_image_features(pixel_values=pixels)))

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, ``[N, projection_dim]``; prompts longer than CLIP's context are truncated."""
        max_length = self.model.config.text_config.max_position_embeddings
        rows = []
        for batch in _batches(texts, self.batch_size):
            inputs = self.processor(
                text=list(batch), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            rows.append(_pooled(self.model.get_text_features(**inputs)))
        return _normalised(rows)

    def clip_t(self, images: Sequence[PilOrPath], prompts: Sequence[str]) -> list[float]:
        """Per image, cosine to its own prompt (``images[i]`` with ``prompts[i]``)."""
        if len(images) != len(prompts):
            raise MetricInputError(f"clip_t needs one prompt per image, got {len(images)} images and {len(prompts)} "
                                   "prompts")
        return [float(x) for x in (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(dim=1)]

    def clip_i(self, images: Sequence[PilOrPath], references: Sequence[PilOrPath]) -> list[float]:
        """Per image, mean cosine to the reference (training) images."""
        return mean_cosine(self.image_embeddings(images), self.image_embeddings(references))


class DinoScorer(_Scorer):
    """A DINOv2 model (any transformers vision ``AutoModel`` with a CLS token) for subject fidelity.

    Example::

        dino = DinoScorer.load()
        dino.similarity(generated, training_images)  # -> [0.61, 0.58]
    """

    kind = "DINO"

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_DINO,
        device: str | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> DinoScorer:
        """Load a DINOv2 (``Dinov2Model``) or a DINO ViT (``ViTModel`` without pooler) and its image processor.

        Any other model type (a CLIP folder given as DINO, for example) is
        refused before a single image is scored.
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, ViTModel

        name = str(name_or_path)
        try:
            model_type = AutoConfig.from_pretrained(name).model_type
        except (OSError, ValueError) as error:
            raise MetricUnavailableError(_load_failure(cls.kind, name, error)) from error
        if model_type not in DINO_MODEL_TYPES:
            raise MetricUnavailableError(
                f"DINO model {name!r} is a {model_type!r} model; give a DINO ViT (e.g. facebook/dino-vits16) or a "
                f"DINOv2 (e.g. facebook/dinov2-base) model ({', '.join(DINO_MODEL_TYPES)})")
        if model_type == "vit":  # DINO ViT checkpoints hold no pooler; the CLS token needs none
            return cls._load(ViTModel, AutoImageProcessor, name, device, dtype, batch_size, add_pooling_layer=False)
        return cls._load(AutoModel, AutoImageProcessor, name, device, dtype, batch_size)

    @torch.inference_mode()
    def embeddings(self, images: Sequence[PilOrPath]) -> torch.Tensor:
        """L2-normalised CLS embeddings, ``[N, hidden_size]`` float32 on the CPU."""
        return self._image_rows(images, lambda pixels: self.model(pixel_values=pixels).last_hidden_state[:, 0])

    def similarity(self, images: Sequence[PilOrPath], references: Sequence[PilOrPath]) -> list[float]:
        """Per image, mean cosine to the reference (training) images."""
        return mean_cosine(self.embeddings(images), self.embeddings(references))


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items; an empty input is an error, not an empty score."""
    if not items:
        raise MetricInputError("no images or prompts given; a similarity needs at least one")
    return (items[start : start + size] for start in range(0, len(items), size))


def _pooled(output: Any) -> torch.Tensor:
    """The projected features: transformers 5 wraps them in ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalised(rows: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate, move to CPU float32 and L2-normalise."""
    return torch.nn.functional.normalize(torch.cat(rows).float().cpu(), dim=-1)


def _computed_buffers(model: torch.nn.Module) -> set[str]:
    """Names of ``model``'s non-persistent buffers: a checkpoint may hold them, but they are never loaded."""
    return {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            for name in module._non_persistent_buffers_set}


def _load_failure(kind: str, name: str, error: Exception) -> str:
    """The one-line reason a model could not be loaded, with the fix for a folder or a hub name."""
    if os.path.isabs(name) or name.startswith(".") or os.path.exists(name):
        fix = "check that the folder exists and holds the model's config.json, weights and processor files"
    else:
        fix = f"pass a local folder that holds it, or download it once with `hf download {name}`"
    return f"{kind} model {name!r} could not be loaded ({str(error).splitlines()[0]}); {fix}"
