"""Staged ai-toolkit extension that lets ai-toolkit's FLUX.2 loader build the tiny test bed's FLUX.2 [klein].

ai-toolkit 27a03a91 builds FLUX.2's transformer from the size's fixed
published parameters (``get_flux2_params``), its autoencoder from the fixed
``AutoEncoderParams()``, and reads the text encoder from the size's hub repo
(``flux2_klein_te_path``). Every other family's tiny model is described by
its own config files, which ai-toolkit reads; FLUX.2's single files carry no
sizes. ``stage_ai_toolkit`` links this folder as ``extensions/zero_prior_testbed``;
ai-toolkit imports every extension at start, so this module wraps
``Flux2Model.load_model`` for the built-in classes (baseline runs) and
zero-prior's subclasses alike. The wrap acts only on a model folder that holds
``aitk.launch.TESTBED_SIZES_FILE`` (written by ``zero-prior tiny-model
--family flux2_klein``): then the transformer and autoencoder get the sizes it
names and the text encoder (with its tokenizer) comes from the folder's
``text_encoder/``. Any other folder loads exactly as ai-toolkit loads it. The
installed extension (``zero-prior install``) does not include it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extensions_built_in.diffusion_models.flux2 import flux2_model
from extensions_built_in.diffusion_models.flux2.src.autoencoder import AutoEncoderParams
from extensions_built_in.diffusion_models.flux2.src.model import Klein4BParams

# Staged as its own extension, next to this package (``extensions.zero_prior``), so imported by that name.
from extensions.zero_prior.aitk.launch import TESTBED_SIZES_FILE


def _tiny_sizes(model_path: str) -> dict[str, Any] | None:
    """The test bed's sizes for ``model_path``, or None for a model folder the test bed did not write."""
    path = Path(model_path) / TESTBED_SIZES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _sized(load_model: Callable[[Any], None]) -> Callable[[Any], None]:
    """``load_model`` building the test bed's sizes where the model folder names them."""

    def load_tiny_or_published(self: Any) -> None:
        sizes = _tiny_sizes(self.model_config.name_or_path)
        if sizes is None:
            return load_model(self)
        # Instance attributes shadow the class's for this model object only.
        self.get_flux2_params = lambda: Klein4BParams(**sizes["Klein4BParams"])
        self.flux2_klein_te_path = str(Path(self.model_config.name_or_path) / "text_encoder")
        published = flux2_model.AutoEncoderParams
        flux2_model.AutoEncoderParams = lambda: AutoEncoderParams(**sizes["AutoEncoderParams"])
        try:
            return load_model(self)
        finally:
            flux2_model.AutoEncoderParams = published

    return load_tiny_or_published


flux2_model.Flux2Model.load_model = _sized(flux2_model.Flux2Model.load_model)
