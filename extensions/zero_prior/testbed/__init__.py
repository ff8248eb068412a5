"""Tiny, real-architecture Qwen-Image test bed: CPU-fast, offline, deterministic.

Tests, benchmarks and the demo need a model that takes the same code paths as
the 20 B original (same classes, real tokenizer ids, same folder layout)
without weights from the hub. torch, diffusers and transformers are imported
inside the functions, so importing this package stays cheap.
"""

from .subject import make_subject_dataset
from .tiny_model import build_tiny_pipeline, cached_tiny_pipeline
from .tokenizer import load_qwen_tokenizer, qwen_tokenizer_dir

__all__ = [
    "build_tiny_pipeline",
    "cached_tiny_pipeline",
    "load_qwen_tokenizer",
    "make_subject_dataset",
    "qwen_tokenizer_dir",
]
