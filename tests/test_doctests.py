"""Every example in the package's docstrings that is written as a doctest runs, and gives what it shows.

Examples that need a real model or a file the reader has (``Example::``
blocks) are documentation only; everything written with ``>>>`` must pass.
Modules that run inside ai-toolkit (``aitk/runtime``) or ComfyUI (``comfyui.loading``, ``comfyui.nodes``) are
excluded: they import it.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import zero_prior

# They import ComfyUI, which only ComfyUI's own process provides (tests/test_comfyui.py runs them there).
COMFYUI_GLUE = ("zero_prior.comfyui.loading", "zero_prior.comfyui.nodes")
# Their examples build and run a tiny pipeline, or rebuild a tokenizer from its ranks (1-2 s each).
SLOW = {"zero_prior.testbed.tiny_model", "zero_prior.testbed.qwen_image_edit_plus", "zero_prior.testbed.z_image",
        "zero_prior.testbed.flux2_klein", "zero_prior.testbed.qwen_image", "zero_prior.testbed.tokenizer"}


def _modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(zero_prior.__path__, "zero_prior.")]
    return ["zero_prior", *(name for name in names if ".aitk.runtime" not in name and not name.endswith("__main__")
                            and name not in COMFYUI_GLUE)]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in _modules()])
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
