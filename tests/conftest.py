"""Shared fixtures: the real Qwen2.5-VL tokenizer, the tiny real-architecture Qwen-Image, a trained LoRA.

The tokenizer and the pipeline come from the on-disk cache of
``zero_prior.testbed`` (``$ZERO_PRIOR_CACHE``, default ``~/.cache/zero_prior``),
so only the first test session pays for building them. Markers: every test
that needs ai-toolkit is marked ``aitk`` and ``slow`` here; other tests over
about 5 s carry ``@pytest.mark.slow`` themselves, so ``pytest -m "not slow"``
is the fast loop.
"""

from __future__ import annotations

import os
from pathlib import Path

# Tests never reach a model hub; set before diffusers/huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from zero_prior.testbed import cached_tiny_pipeline, load_qwen_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_pipeline_dir() -> Path:
    """Folder of the seed-0 tiny Qwen-Image pipeline (diffusers layout). Read-only: copy it to modify."""
    return cached_tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def tiny_zimage_dir() -> Path:
    """Folder of the seed-0 tiny Z-Image pipeline (``ZImagePipeline`` layout). Read-only."""
    return cached_tiny_pipeline(seed=0, family="zimage")


@pytest.fixture(scope="session")
def tiny_flux2_dir() -> Path:
    """Folder of the seed-0 tiny FLUX.2 [klein] (``Flux2KleinPipeline`` layout and ai-toolkit's single files)."""
    return cached_tiny_pipeline(seed=0, family="flux2_klein")


@pytest.fixture(scope="session")
def session_tokenizer():
    """The real Qwen2.5-VL ``Qwen2Tokenizer``, loaded once; tests get their own copy (``qwen_tokenizer``)."""
    return load_qwen_tokenizer()


@pytest.fixture
def qwen_tokenizer(session_tokenizer):
    """A copy of the real tokenizer per test (its own added tokens), so adding tokens cannot leak between tests."""
    from zero_prior.placeholder.vocabulary import light_copy

    return light_copy(session_tokenizer)


@pytest.fixture(scope="session")
def trained(tiny_pipeline_dir, tmp_path_factory):
    """The two-placeholder LoRA the loader and export tests read (``tinytrain.train_two_tokens``)."""
    import tinytrain

    return tinytrain.train_two_tokens(tiny_pipeline_dir, tmp_path_factory.mktemp("lora"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run ai-toolkit are ``aitk`` and ``slow`` (each ``run.py`` start costs 20 s or more), tests that
    run ComfyUI ``comfyui`` (importing it takes several seconds)."""
    for item in items:
        if "ai_toolkit_checkout" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.aitk)
            item.add_marker(pytest.mark.slow)
        if "comfyui_checkout" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.comfyui)


# Packages only ai-toolkit's requirements bring; without them its run.py cannot start.
AI_TOOLKIT_ONLY_PACKAGES = ("optimum", "lycoris", "oyaml", "dotenv")
# What importing ComfyUI's comfy.sd and nodes needs beyond zero-prior's own requirements (bootstrap.sh installs them).
COMFYUI_ONLY_PACKAGES = ("einops", "psutil", "torchaudio", "torchsde", "av", "scipy")


def _host_checkout(find, host: str, get_it: str, packages: tuple[str, ...], install_hint: str = "") -> Path:
    """The host's checkout as ``find()`` gives it, or a skip that says why (no checkout, or its packages missing)."""
    import importlib.util

    from zero_prior.errors import ZeroPriorError

    try:
        checkout = find()
    except ZeroPriorError as error:
        pytest.skip(f"{host} not found ({error}); {get_it}")
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{host}'s requirements are not installed here (missing {', '.join(missing)}){install_hint}")
    return checkout


@pytest.fixture(scope="session")
def ai_toolkit_checkout() -> Path:
    """The ai-toolkit checkout ($AI_TOOLKIT_DIR, else ~/ai-toolkit); skips, saying why, when it cannot run."""
    from zero_prior.aitk.checkout import AI_TOOLKIT_ENV, find_ai_toolkit

    return _host_checkout(find_ai_toolkit, "ai-toolkit", f"clone it to ~/ai-toolkit or set {AI_TOOLKIT_ENV}",
                          AI_TOOLKIT_ONLY_PACKAGES)


# ai-toolkit's own FLUX.2 classes (BFL's layout): torch, einops, PIL and torchvision only, no toolkit package.
AITK_FLUX2_SRC = "extensions_built_in/diffusion_models/flux2/src"


@pytest.fixture(scope="session")
def aitk_flux2_src(ai_toolkit_checkout: Path):
    """ai-toolkit's ``flux2/src`` folder imported as a package of its own, so its relative imports work while
    ``extensions_built_in`` (which imports all of ai-toolkit) stays unimported; its ``model``, ``autoencoder``
    and ``sampling`` modules are attributes."""
    import importlib
    import importlib.util
    import sys

    name = "aitk_flux2_src"
    if name not in sys.modules:
        folder = ai_toolkit_checkout / AITK_FLUX2_SRC
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    for module in ("model", "autoencoder", "sampling"):
        importlib.import_module(f"{name}.{module}")
    return sys.modules[name]


@pytest.fixture(scope="session")
def comfyui_checkout() -> Path:
    """The ComfyUI checkout ($COMFYUI_DIR, else ~/ComfyUI); skips, saying why, when it cannot be imported."""
    from zero_prior.comfyui.checkout import COMFYUI_ENV, find_comfyui

    return _host_checkout(find_comfyui, "ComfyUI", f"fetch it to ~/ComfyUI or set {COMFYUI_ENV}",
                          COMFYUI_ONLY_PACKAGES, "; run scripts/bootstrap.sh with the checkout in place")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A random CLIP with a byte-level tokenizer, saved like a hub folder (``testbed.metric_models``)."""
    from zero_prior.testbed.metric_models import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_dino_dir(tmp_path_factory):
    """A random DINOv2 with its image processor, saved like a hub folder (``testbed.metric_models``)."""
    from zero_prior.testbed.metric_models import write_tiny_dino

    return write_tiny_dino(tmp_path_factory.mktemp("tiny_dino"))
