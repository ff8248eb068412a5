"""The tiny FLUX.2 [klein] in Black Forest Labs' own file layout, the one ai-toolkit loads.

ai-toolkit trains FLUX.2 with BFL's classes, not diffusers': it reads
``flux-2-klein-base-4b.safetensors`` and ``ae.safetensors`` from the model
folder into its ``Flux2`` and ``AutoEncoder`` modules, built from its
``Klein4BParams`` and ``AutoEncoderParams`` dataclasses. ``write_bfl_files``
adds both files to a diffusers ``Flux2KleinPipeline`` folder (the same
tensors under BFL names, q/k/v fused) and ``aitk_sizes.json``, the dataclass
values that build modules of the folder's sizes::

    {"Klein4BParams": {"in_channels": 128, ...}, "AutoEncoderParams": {"ch": 32, ...}}

The transformer mapping inverts diffusers' ``convert_flux2_transformer_checkpoint_to_diffusers``
and the VAE mapping its LDM VAE converter (``convert_ldm_vae_checkpoint``), plus
the two places where BFL's autoencoder differs from LDM's: the quant convs live
inside its encoder and decoder, and the latent batch norm sits at the top as in
diffusers. Only torch, safetensors and the folder's JSON configs are needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..aitk.launch import TESTBED_SIZES_FILE as SIZES_FILE
from ..errors import FormatError

if TYPE_CHECKING:
    import torch

TRANSFORMER_FILE = "flux-2-klein-base-4b.safetensors"  # Flux2Klein4BModel.flux2_te_filename
VAE_FILE = "ae.safetensors"  # flux2_model.FLUX2_VAE_FILENAME
# ai-toolkit's AutoEncoder hard-codes these; a diffusers VAE with other values has no BFL equivalent.
BFL_VAE_NORM_GROUPS = 32
BFL_VAE_BATCH_NORM_EPS = 1e-4
BFL_VAE_PATCH = [2, 2]

# diffusers module -> BFL module, outside the transformer blocks.
_TRANSFORMER_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
    "proj_out": "final_layer.linear",
}
# Inside transformer_blocks.N (BFL double_blocks.N); the q/k/v projections are fused below.
_DOUBLE_BLOCK = {
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.to_out.0": "img_attn.proj",
    "ff.linear_in": "img_mlp.0",
    "ff.linear_out": "img_mlp.2",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
    "attn.to_add_out": "txt_attn.proj",
    "ff_context.linear_in": "txt_mlp.0",
    "ff_context.linear_out": "txt_mlp.2",
}
_DOUBLE_BLOCK_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
# Inside single_transformer_blocks.N (BFL single_blocks.N).
_SINGLE_BLOCK = {
    "attn.to_qkv_mlp_proj": "linear1",
    "attn.to_out": "linear2",
    "attn.norm_q": "norm.query_norm",
    "attn.norm_k": "norm.key_norm",
}
_FINAL_MODULATION = "final_layer.adaLN_modulation.1"


def _swap_halves(weight: torch.Tensor) -> torch.Tensor:
    """BFL's final modulation emits (shift, scale), diffusers' (scale, shift): the swap is its own inverse."""
    import torch

    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _bfl_transformer_module(module: str) -> str:
    """The BFL module of one (unfused) diffusers transformer module, or a FormatError naming it."""
    block = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", module)
    if block and block.group(2) in _DOUBLE_BLOCK:
        return f"double_blocks.{block.group(1)}.{_DOUBLE_BLOCK[block.group(2)]}"
    single = re.fullmatch(r"single_transformer_blocks\.(\d+)\.(.+)", module)
    if single and single.group(2) in _SINGLE_BLOCK:
        return f"single_blocks.{single.group(1)}.{_SINGLE_BLOCK[single.group(2)]}"
    if module in _TRANSFORMER_TOP:
        return _TRANSFORMER_TOP[module]
    raise FormatError(f"diffusers FLUX.2 transformer key {module!r} has no BFL equivalent; "
                      "the mapping in zero_prior/testbed/flux2_bfl.py needs a rule for it")


def transformer_to_bfl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``Flux2Transformer2DModel`` state dict in BFL/ai-toolkit names (``Flux2``), q/k/v fused.

    Diffusers' own converter maps the result back to ``state`` exactly.
    """
    import torch

    state = dict(state)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        match = re.fullmatch(r"transformer_blocks\.(\d+)\.attn\.to_q\.(weight|bias)", key)
        if not match:
            continue
        block, param = match.groups()
        for fused, parts in _DOUBLE_BLOCK_FUSED.items():
            names = [f"transformer_blocks.{block}.{part}.{param}" for part in parts]
            missing = [name for name in names if name not in state]
            if missing:
                raise FormatError(f"diffusers FLUX.2 transformer lacks {', '.join(missing)} "
                                  f"(needed to fuse double_blocks.{block}.{fused})")
            out[f"double_blocks.{block}.{fused}.{param}"] = torch.cat([state.pop(name) for name in names], dim=0)
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        target = _bfl_transformer_module(module)
        if target.endswith(("query_norm", "key_norm")):
            param = "scale"  # BFL's RMSNorm calls its weight "scale"
        out[f"{target}.{param}"] = _swap_halves(value) if target == _FINAL_MODULATION else value
    return out


_RESNET_PARTS = {"norm1", "conv1", "norm2", "conv2", "conv_shortcut"}
_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {
    "quant_conv": "encoder.quant_conv",
    "post_quant_conv": "decoder.post_quant_conv",
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_norm_out": "decoder.norm_out",
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "bn": "bn",
}


def _bfl_vae_module(module: str, up_blocks: int) -> str:
    """The BFL ``AutoEncoder`` module of one diffusers ``AutoencoderKLFlux2`` module (decoder levels reversed)."""
    if module in _VAE_TOP:
        return _VAE_TOP[module]
    resnet = re.fullmatch(r"(encoder\.down|decoder\.up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", module)
    if resnet and resnet.group(4) in _RESNET_PARTS:
        side, level, index, part = resnet.groups()
        level = int(level) if side == "encoder.down" else up_blocks - 1 - int(level)
        return f"{side}.{level}.block.{index}.{part.replace('conv_shortcut', 'nin_shortcut')}"
    sampler = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv", module)
    if sampler:
        return f"encoder.down.{sampler.group(1)}.downsample.conv"
    sampler = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv", module)
    if sampler:
        return f"decoder.up.{up_blocks - 1 - int(sampler.group(1))}.upsample.conv"
    mid = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)", module)
    if mid and mid.group(3) in _RESNET_PARTS - {"conv_shortcut"}:
        return f"{mid.group(1)}.mid.block_{int(mid.group(2)) + 1}.{mid.group(3)}"
    attention = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", module)
    if attention and attention.group(2) in _ATTENTION_PARTS:
        return f"{attention.group(1)}.mid.attn_1.{_ATTENTION_PARTS[attention.group(2)]}"
    raise FormatError(f"diffusers FLUX.2 VAE key {module!r} has no BFL equivalent; "
                      "the mapping in zero_prior/testbed/flux2_bfl.py needs a rule for it")


def vae_to_bfl(state: dict[str, torch.Tensor], up_blocks: int) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKLFlux2`` state dict (``up_blocks`` decoder levels) in BFL ``AutoEncoder`` names.

    The mid-block attention's linear q/k/v/out become BFL's 1x1 convs; the
    batch-norm statistics keep their names.
    """
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        target = _bfl_vae_module(module, up_blocks)
        if ".mid.attn_1." in target and not target.endswith(".norm") and param == "weight":
            value = value[:, :, None, None]
        out[f"{target}.{param}"] = value
    return out


def aitk_sizes(transformer_config: dict, vae_config: dict) -> dict[str, dict]:
    """ai-toolkit's ``Klein4BParams`` and ``AutoEncoderParams`` values for a diffusers transformer and VAE config.

    Refuses (FormatError) a config that ai-toolkit's classes cannot express, naming the setting.
    """
    if transformer_config.get("patch_size", 1) != 1:
        raise FormatError(f"transformer patch_size {transformer_config['patch_size']} != 1: ai-toolkit's Flux2 "
                          "takes 2x2-patchified latents as 1x1 patches")
    heads = transformer_config["num_attention_heads"]
    transformer = {
        "in_channels": transformer_config["in_channels"],
        "context_in_dim": transformer_config["joint_attention_dim"],
        "hidden_size": heads * transformer_config["attention_head_dim"],
        "num_heads": heads,
        "depth": transformer_config["num_layers"],
        "depth_single_blocks": transformer_config["num_single_layers"],
        "axes_dim": list(transformer_config["axes_dims_rope"]),
        "theta": transformer_config["rope_theta"],
        "mlp_ratio": transformer_config["mlp_ratio"],
        "use_guidance_embed": transformer_config["guidance_embeds"],
    }
    widths = list(vae_config["block_out_channels"])
    fixed = {"norm_num_groups": BFL_VAE_NORM_GROUPS, "batch_norm_eps": BFL_VAE_BATCH_NORM_EPS,
             "patch_size": BFL_VAE_PATCH, "use_quant_conv": True, "use_post_quant_conv": True,
             "mid_block_add_attention": True, "decoder_block_out_channels": None}
    for name, wanted in fixed.items():
        value = vae_config.get(name, wanted)
        if (list(value) if isinstance(value, (list, tuple)) else value) != wanted:
            raise FormatError(f"VAE {name} is {value!r}; ai-toolkit's AutoEncoder only holds {wanted!r}")
    if any(width % widths[0] for width in widths):
        raise FormatError(f"VAE block_out_channels {widths} are not multiples of the first; "
                          "AutoEncoderParams expresses them as ch * ch_mult")
    vae = {
        "resolution": vae_config["sample_size"],
        "in_channels": vae_config["in_channels"],
        "ch": widths[0],
        "out_ch": vae_config["out_channels"],
        "ch_mult": [width // widths[0] for width in widths],
        "num_res_blocks": vae_config["layers_per_block"],
        "z_channels": vae_config["latent_channels"],
    }
    return {"Klein4BParams": transformer, "AutoEncoderParams": vae}


def write_bfl_files(folder: str | Path) -> Path:
    """Add ``flux-2-klein-base-4b.safetensors``, ``ae.safetensors`` and ``aitk_sizes.json`` to a diffusers
    ``Flux2KleinPipeline`` folder (its ``transformer/`` and ``vae/``), so ai-toolkit can load it; returns it."""
    from safetensors.torch import load_file, save_file

    root = Path(folder)
    configs = {}
    states = {}
    for part in ("transformer", "vae"):
        files = sorted((root / part).glob("*.safetensors"))
        config = root / part / "config.json"
        if not files or not config.is_file():
            raise FormatError(f"{root / part} lacks config.json or *.safetensors; write the diffusers folder first")
        configs[part] = json.loads(config.read_text(encoding="utf-8"))
        states[part] = {key: value for file in files for key, value in load_file(file).items()}
    sizes = aitk_sizes(configs["transformer"], configs["vae"])
    save_file(transformer_to_bfl(states["transformer"]), root / TRANSFORMER_FILE)
    save_file(vae_to_bfl(states["vae"], len(configs["vae"]["up_block_types"])), root / VAE_FILE)
    (root / SIZES_FILE).write_text(json.dumps(sizes, indent=2) + "\n", encoding="utf-8")
    return root
