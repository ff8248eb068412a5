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
import torch  # noqa: E402

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


@pytest.fixture(scope="session")
def ai_toolkit_checkout() -> Path:
    """The ai-toolkit checkout ($AI_TOOLKIT_DIR, else ~/ai-toolkit); skips, saying why, when it cannot run."""
    import importlib.util

    from zero_prior.aitk.checkout import AI_TOOLKIT_ENV, find_ai_toolkit
    from zero_prior.errors import ZeroPriorError

    try:
        checkout = find_ai_toolkit()
    except ZeroPriorError as error:
        pytest.skip(f"ai-toolkit not found ({error}); clone it to ~/ai-toolkit or set {AI_TOOLKIT_ENV}")
    missing = [name for name in AI_TOOLKIT_ONLY_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"ai-toolkit's requirements are not installed here (missing {', '.join(missing)})")
    return checkout


# What importing ComfyUI's comfy.sd and nodes needs beyond zero-prior's own requirements (bootstrap.sh installs them).
COMFYUI_ONLY_PACKAGES = ("einops", "psutil", "torchaudio", "torchsde", "av", "scipy")


@pytest.fixture(scope="session")
def comfyui_checkout() -> Path:
    """The ComfyUI checkout ($COMFYUI_DIR, else ~/ComfyUI); skips, saying why, when it cannot be imported."""
    import importlib.util

    from zero_prior.comfyui.checkout import COMFYUI_ENV, find_comfyui
    from zero_prior.errors import ZeroPriorError

    try:
        checkout = find_comfyui()
    except ZeroPriorError as error:
        pytest.skip(f"ComfyUI not found ({error}); fetch it to ~/ComfyUI or set {COMFYUI_ENV}")
    missing = [name for name in COMFYUI_ONLY_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"ComfyUI's requirements are not installed here (missing {', '.join(missing)}); run "
                    "scripts/bootstrap.sh with the checkout in place")
    return checkout


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A random CLIP with a byte-level tokenizer, saved like a hub folder."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
        vocab[symbol + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dino_dir(tmp_path_factory):
    """A random DINOv2 with its image processor, saved like a hub folder."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_dino")
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder
