"""Tiny random-weight pipelines of every supported model family, built once and cached.

Each family's builder is its own module here (``qwen_image``, ...): the real
diffusers and transformers classes with small configs, seeded weights and the
real vocabulary, saved in the diffusers folder layout, so code under test takes
the loading path it takes with the full model. This module picks the builder
and keys the on-disk cache (``_cache``) by family, seed, build inputs and the
library versions that decide the random init.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from . import flux2_klein, qwen_image, qwen_image_edit_plus, z_image
from ._cache import cache_root, cached_build

# family name (zero_prior.models) -> its builder module (``build(out_dir, seed, **options)``, ``cache_inputs()``)
BUILDERS: dict[str, ModuleType] = {"qwen_image": qwen_image, "zimage": z_image,
                                   "qwen_image_edit_plus": qwen_image_edit_plus, "flux2_klein": flux2_klein}


def build_tiny_pipeline(out_dir: str | Path, seed: int = 0, family: str = "qwen_image", **options: int) -> Path:
    """Write a tiny pipeline of ``family`` into ``out_dir`` (new or empty) and return its path.

    The same seed gives byte-identical files; the caller's global RNG state is
    left untouched. ``options`` go to the family's builder (e.g. ``text_hidden_size``).
    """
    return _builder(family).build(out_dir, seed=seed, **options)


def cached_tiny_pipeline(seed: int = 0, family: str = "qwen_image") -> Path:
    """The tiny pipeline of ``family`` for ``seed``, built once under ``$ZERO_PRIOR_CACHE`` and then reused.

    A folder whose files no longer match its manifest is rebuilt. Treat it as read-only.

    >>> cached_tiny_pipeline().name  # doctest: +ELLIPSIS
    'tiny_qwen_image-v1-seed0-...'
    """
    builder = _builder(family)
    inputs = {**builder.cache_inputs(), "family": family, "seed": str(seed),
              **{name: version(name) for name in ("torch", "diffusers", "transformers")}}
    # The inputs' digest in the name keeps environments with other library versions
    # from rebuilding (and deleting) each other's folder.
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / f"tiny_{family}-v{inputs['build_version']}-seed{seed}-{key}"

    def build(folder: Path) -> None:
        builder.build(folder, seed=seed)

    return cached_build(target, inputs, build)


def _builder(family: str) -> ModuleType:
    if family not in BUILDERS:
        raise ConfigError(f"no tiny test bed for family {family!r}; choose one of {', '.join(sorted(BUILDERS))}")
    return BUILDERS[family]
