"""zero-prior: Qwen-Image subject LoRAs with a brand-new, near-zero placeholder token.

This folder is both the Python package ``zero_prior`` and an ai-toolkit
extension (ai-toolkit imports it as ``extensions.zero_prior`` and reads
``AI_TOOLKIT_EXTENSIONS`` and ``AI_TOOLKIT_MODELS``). Importing it is cheap
and needs no ai-toolkit: the public names and the ai-toolkit glue are
resolved lazily on first access (PEP 562), so the library and its tests run
without ai-toolkit, while inside ai-toolkit a broken glue import fails loudly
instead of being skipped.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "PlaceholderConfig": "config",
    "add_placeholders": "prepare",
    "load_zero_prior": "loader",
    "LoadResult": "loader",
    "read_zero_prior": "format",
    "save_lora_file": "format",
    "placeholder_stats": "telemetry",
    "ZeroPriorError": "errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

# ai-toolkit's plugin lists -> module that defines them. These modules import
# ai-toolkit, so they resolve only inside it, where a failure must be loud.
_AI_TOOLKIT = {
    "AI_TOOLKIT_EXTENSIONS": "aitk.extension",
    "AI_TOOLKIT_MODELS": "aitk.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _AI_TOOLKIT:
        return getattr(importlib.import_module(f".{_AI_TOOLKIT[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
