"""Packaging for zero-prior.

The folder ``extensions/zero_prior`` is both the ai-toolkit extension (dropped
into an ai-toolkit checkout) and the importable package ``zero_prior``.
Requirements are ranges, never pins: the package is installed inside
ai-toolkit's own environment (diffusers 0.39.0, transformers 5.5.3,
peft 0.18.1, huggingface_hub 1.23.0, torch 2.14.1) and must not move them.
"""

from setuptools import find_packages, setup

PACKAGE_DIR = "extensions/zero_prior"
EVAL = ["scipy>=1.10", "lpips>=0.1.4", "matplotlib>=3.7"]
# cog/predict.py and cog/train.py (BasePredictor/predict(): deprecated in 0.23, kept by Replicate's clients).
COG = ["cog>=0.23,<0.24"]

setup(
    name="zero-prior",
    version="0.1.0",
    description=(
        "Train a Qwen-Image subject LoRA together with a brand-new, "
        "near-zero-initialised placeholder token (an ai-toolkit extension)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The example configs stay at the repository root (config_examples/) and are
    # also the package data `zero_prior.config_examples`, so every install finds them.
    package_dir={"zero_prior": PACKAGE_DIR, "zero_prior.config_examples": "config_examples"},
    packages=["zero_prior", "zero_prior.config_examples"]
    + [f"zero_prior.{name}" for name in find_packages(PACKAGE_DIR)],
    package_data={"zero_prior.config_examples": ["*.yaml", "*.json"]},
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.39.0",
        "transformers>=5.0",
        "peft>=0.17",
        "safetensors>=0.4",
        "accelerate>=1.0",
        "pillow>=10.0",
        "numpy>=1.26",
        "pyyaml>=6.0",
        "tqdm>=4.66",
    ],
    extras_require={
        # dashscope ships the real Qwen2.5-VL BPE ranks (qwen.tiktoken) that the
        # tiny test bed turns into the real tokenizer; nothing of it is imported.
        # The tests also exercise the evaluation and the Cog predictor/trainer.
        "test": ["pytest>=8.0", "ruff>=0.6", "dashscope>=1.20", *EVAL, *COG],
        "eval": EVAL,
        "cog": COG,
    },
    entry_points={"console_scripts": ["zero-prior=zero_prior.cli:main"]},
)
