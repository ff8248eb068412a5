"""zero-prior: subject LoRAs with a brand-new, near-zero placeholder token (Qwen-Image and kin).

This folder is the Python package ``zero_prior``, an ai-toolkit extension
(ai-toolkit imports it as ``extensions.zero_prior`` and reads
``AI_TOOLKIT_EXTENSIONS`` and ``AI_TOOLKIT_MODELS``) and a ComfyUI custom node
package (``custom_nodes/zero_prior``: ``NODE_CLASS_MAPPINGS``). Importing it
is cheap and needs neither: the public names and the host glue are
resolved lazily on first access (PEP 562), so the library and its tests run
without ai-toolkit, while inside ai-toolkit a broken glue import fails loudly
instead of being skipped.

The folders follow the data path: ``placeholder/`` (the token: config,
vocabulary, starts, the embedding splice), ``models/`` (one module per model
family), ``training/`` (prefix cache, several GPUs), ``aitk/`` (ai-toolkit:
config rules, launcher, installer; ``aitk/runtime/`` runs inside it),
``weights/`` (file format, packages, loader, exports), ``comfyui/`` (the
ComfyUI node), ``serving/``
(generation, Cog), ``experiment/`` (the controlled comparison),
``testbed/`` (tiny real-architecture models) and ``cli/``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "PlaceholderConfig": "placeholder.config",
    "add_placeholders": "placeholder.prepare",
    "load_zero_prior": "weights.loader",
    "unload_zero_prior": "weights.loader",
    "LoadResult": "weights.loader",
    "read_zero_prior": "weights.format",
    "save_lora_file": "weights.format",
    "placeholder_stats": "placeholder.telemetry",
    "ZeroPriorError": "errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

# ai-toolkit's plugin lists -> module that defines them. These modules import
# ai-toolkit, so they resolve only inside it, where a failure must be loud.
_AI_TOOLKIT = {
    "AI_TOOLKIT_EXTENSIONS": "aitk.runtime.extension",
    "AI_TOOLKIT_MODELS": "aitk.runtime.models",
}
# ComfyUI's custom-node lists (``zero-prior install --comfyui``); they import ComfyUI, so they resolve only inside it.
_COMFYUI = {
    "NODE_CLASS_MAPPINGS": "comfyui.nodes",
    "NODE_DISPLAY_NAME_MAPPINGS": "comfyui.nodes",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _AI_TOOLKIT:
        return getattr(importlib.import_module(f".{_AI_TOOLKIT[name]}", __name__), name)
    if name in _COMFYUI:
        return getattr(importlib.import_module(f".{_COMFYUI[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
