"""Shared fixtures: the real Qwen2.5-VL tokenizer and the tiny real-architecture Qwen-Image.

Both come from the on-disk cache of ``zero_prior.testbed`` (``$ZERO_PRIOR_CACHE``,
default ``~/.cache/zero_prior``), so only the first test session pays for
building them.
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


@pytest.fixture
def qwen_tokenizer():
    """A fresh real Qwen2.5-VL ``Qwen2Tokenizer`` per test, so adding tokens cannot leak between tests."""
    return load_qwen_tokenizer()
