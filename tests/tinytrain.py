"""Test-only training on the tiny pipeline: a LoRA on the transformer plus placeholders.

A few flow-matching steps through diffusers' real ``encode_prompt`` and
``QwenImageTransformer2DModel``, shared by the isolation, loader and CLI
tests so each of them trains the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, QwenImagePipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from zero_prior.placeholder.config import PlaceholderConfig
from zero_prior.placeholder.prepare import add_placeholders
from zero_prior.placeholder.splice import PlaceholderEmbedding
from zero_prior.placeholder.vocabulary import expand_prompt, light_copy
from zero_prior.serving.generate import generate_images
from zero_prior.weights.format import save_lora_file, to_record
from zero_prior.weights.loader import load_zero_prior

LORA_RANK = 4
PROMPT = "a photo of <zwx>, smiling"


_PRISTINE: dict[tuple[str, torch.dtype], DiffusionPipeline] = {}


def load_pipe(model_dir: Path, dtype: torch.dtype = torch.float32) -> DiffusionPipeline:
    """A pipeline of ``model_dir`` as ``from_pretrained`` gives it, of its own (tests may change it freely).

    The folder is loaded once per process; each call copies that pristine
    pipeline (modules deep-copied, tokenizer by ``light_copy``), about 8x
    faster than loading it again.
    """
    key = (str(model_dir), dtype)
    if key not in _PRISTINE:
        _PRISTINE[key] = DiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=dtype)
    pristine = _PRISTINE[key]
    parts = {name: light_copy(part) if name == "tokenizer" else copy.deepcopy(part)
             for name, part in pristine.components.items()}
    return type(pristine)(**parts)


def add_lora(pipe: QwenImagePipeline) -> list[torch.nn.Parameter]:
    """peft LoRA with alpha == rank (what ai-toolkit saves: scale 1, no alpha keys)."""
    pipe.transformer.requires_grad_(False)
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, init_lora_weights="gaussian",
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    pipe.transformer.add_adapter(config)
    return [p for p in pipe.transformer.parameters() if p.requires_grad]


def flow_loss(pipe: QwenImagePipeline, prompt: str, generator: torch.Generator) -> torch.Tensor:
    """One flow-matching loss on random 32x32 latents, differentiable through encode_prompt."""
    embeds, mask = pipe.encode_prompt(prompt, device=pipe.device)
    channels = pipe.transformer.config.in_channels
    latents = torch.randn(1, 16, channels, generator=generator)  # 4x4 packed patches
    noise = torch.randn(latents.shape, generator=generator)
    t = torch.rand(1, generator=generator)
    noisy = (1 - t) * latents + t * noise
    pred = pipe.transformer(
        hidden_states=noisy.to(pipe.transformer.dtype),
        timestep=t,
        encoder_hidden_states=embeds,
        encoder_hidden_states_mask=mask,
        img_shapes=[[(1, 4, 4)]],
        return_dict=False,
    )[0]
    return torch.nn.functional.mse_loss(pred.float(), (noise - latents).float())


def train(
    pipe: QwenImagePipeline,
    configs: list[PlaceholderConfig],
    steps: int,
    lr: float = 1e-3,
    prompt: str = PROMPT,
) -> tuple[list[PlaceholderEmbedding], torch.optim.Optimizer]:
    """AdamW with weight decay 0.01 on the LoRA group and 0 on the placeholder group (last)."""
    lora = add_lora(pipe)
    placeholders = add_placeholders(pipe.text_encoder, pipe.tokenizer, configs)
    optimizer = torch.optim.AdamW(
        [
            {"params": lora, "weight_decay": 0.01},
            {"params": [p.vectors for p in placeholders], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        flow_loss(pipe, prompt, generator).backward()
        optimizer.step()
    return placeholders, optimizer


def save(pipe: QwenImagePipeline, placeholders, configs, path: Path, tokenizer_length: int = 151665) -> Path:
    """Write the LoRA (ai-toolkit's ``diffusion_model.`` keys) with the placeholder record."""
    state = {f"diffusion_model.{k}": v for k, v in get_peft_model_state_dict(pipe.transformer).items()}
    record = to_record(placeholders, configs, tokenizer_length=tokenizer_length, base_model="tiny", training_step=3)
    return save_lora_file(path, state, {"name": "test"}, record)


# The two-placeholder training the loader and export tests share (``trained`` in conftest.py).
CONFIGS = [PlaceholderConfig(), PlaceholderConfig(token="<bg2>", num_vectors=2)]
TWO_TOKEN_PROMPT = "a photo of <zwx> in front of <bg2>"


def transformer_output(pipe: QwenImagePipeline, embeds: torch.Tensor) -> torch.Tensor:
    """The transformer's prediction for fixed 4x4 latents and ``embeds`` (compares LoRA and embedding round trips)."""
    hidden = torch.linspace(-1, 1, 16 * pipe.transformer.config.in_channels).reshape(1, 16, -1)
    return pipe.transformer(hidden_states=hidden, timestep=torch.tensor([0.5]), encoder_hidden_states=embeds,
                            img_shapes=[[(1, 4, 4)]], return_dict=False)[0]


def image(pipe: QwenImagePipeline, prompt: str = TWO_TOKEN_PROMPT) -> np.ndarray:
    """A 32x32 image in 2 steps from seed 7 (``generate_images``), as floats in [0, 1] before 8-bit rounding.

    Floats, because two separately loaded copies of the same pipeline differ
    by float noise on the CPU, and at 8 bits that noise flips a pixel by one
    level in about one process of 14 (measured), while the trained token and
    LoRA move this tiny model's 8-bit image by one level on only 1.5-4 % of its
    pixels: compare with ``assert_same_image``.
    """
    [picture] = generate_images(pipe, [prompt], seed=7, steps=2, height=32, width=32, output_type="np")
    return picture


IMAGE_TOLERANCE = 1e-5
"""Float noise between two copies of a pipeline measured 3.6e-7 to 4.5e-7 (max abs); dropping the trained token's
vector moved the image by 9e-4 and dropping the LoRA by 1.8e-4 to 3.9e-4 (the Cog test's package, 6 processes)."""


def assert_same_image(ours: np.ndarray, expected: np.ndarray) -> None:
    """``image()`` of two pipelines agrees within float noise (``IMAGE_TOLERANCE``), far below a vector's effect."""
    assert ours.shape == expected.shape, f"image shapes differ: {ours.shape} and {expected.shape}"
    difference = float(np.abs(ours - expected).max())
    assert difference <= IMAGE_TOLERANCE, f"images differ by {difference:.3g} (float noise is below {IMAGE_TOLERANCE})"


@dataclass(frozen=True)
class TrainedLora:
    """A 3-step two-placeholder training: the file, and what it produced at training time."""

    path: Path
    embeds: torch.Tensor  # TWO_TOKEN_PROMPT's embeddings with the trained vectors
    output: torch.Tensor  # transformer_output of those embeddings, with the trained LoRA
    image: np.ndarray  # image() of a fresh pipeline after load_zero_prior(path)


def train_two_tokens(model_dir: Path, folder: Path) -> TrainedLora:
    """Train ``CONFIGS`` for 3 steps on the tiny pipeline and save the LoRA into ``folder``."""
    pipe = load_pipe(model_dir)
    placeholders, _ = train(pipe, CONFIGS, steps=3, prompt="<zwx> and <bg2>")
    path = save(pipe, placeholders, CONFIGS, folder / "subject.safetensors")
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(expand_prompt(TWO_TOKEN_PROMPT, [p.registered for p in placeholders]),
                                       device="cpu")
        output = transformer_output(pipe, embeds)
    fresh = load_pipe(model_dir)
    load_zero_prior(fresh, path)
    return TrainedLora(path, embeds, output, image(fresh))
