"""Tiny random CLIP, DINOv2 and LPIPS backbone folders, so the tiny experiment runs without downloads.

They are the real transformers / torchvision classes with seeded random
weights, saved like hub folders; every folder holds ``RANDOM_WEIGHTS_FILE``,
which the evaluation reads to label the metrics of a report "random, not
meaningful". They check the machinery, never a quality claim.

LPIPS takes its backbone from torch's hub cache (``$TORCH_HOME/hub/checkpoints``),
so the backbone is written there under the file name torchvision would
download; SqueezeNet 1.1 keeps it at about 5 MB.
"""

from __future__ import annotations

from pathlib import Path

from ..experiment.metrics.identity import RANDOM_WEIGHTS_FILE

RANDOM_NOTE = ("Random weights written by zero_prior.testbed.metric_models for tests and the tiny experiment; "
               "scores computed with them are not meaningful.\n")
TINY_LPIPS_NET = "squeeze"


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIP (text and vision towers) with a byte-level tokenizer, saved like a hub folder."""
    import torch
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
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    (folder / RANDOM_WEIGHTS_FILE).write_text(RANDOM_NOTE, encoding="utf-8")
    return folder


def write_tiny_dino(folder: Path, seed: int = 0) -> Path:
    """A random DINOv2 with its image processor, saved like a hub folder."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    (folder / RANDOM_WEIGHTS_FILE).write_text(RANDOM_NOTE, encoding="utf-8")
    return folder


def write_tiny_lpips_backbone(torch_home: Path, seed: int = 0) -> Path:
    """A random SqueezeNet 1.1 state dict where LPIPS ``squeeze`` looks for it when ``TORCH_HOME=torch_home``."""
    import os
    from urllib.parse import urlparse

    import torch
    import torchvision
    from torchvision.models import get_weight

    torch.manual_seed(seed)
    url = get_weight("SqueezeNet1_1_Weights.IMAGENET1K_V1").url
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    path = checkpoints / os.path.basename(urlparse(url).path)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    (checkpoints / RANDOM_WEIGHTS_FILE).write_text(RANDOM_NOTE, encoding="utf-8")
    return path


def write_tiny_metric_models(out: Path, seed: int = 0) -> dict[str, Path]:
    """``out/clip``, ``out/dino`` and ``out/torch`` (the ``TORCH_HOME`` of a random LPIPS backbone)."""
    return {
        "clip": write_tiny_clip(out / "clip", seed),
        "dino": write_tiny_dino(out / "dino", seed),
        "torch_home": write_tiny_lpips_backbone(out / "torch", seed).parents[2],
    }
