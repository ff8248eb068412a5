"""Run inside a fresh Python: load the custom node with ComfyUI's own loader and record what ComfyUI makes of it.

``test_comfyui.py`` starts this script in a subprocess (ComfyUI parses
``sys.argv`` and sets process-wide state when imported) with a JSON request;
it builds ComfyUI's own Qwen-Image text encoder (``QwenImageTEModel``,
``Qwen25_7BVLI``) and diffusion model (``model_base.QwenImage``) at the tiny
test bed's width with its weights, runs the node as ComfyUI would, and writes
token sequences, input embeddings, encoder outputs, patched weights and error
messages for the test to compare with diffusers. It asserts nothing itself.

    python comfyui_probe.py COMFYUI_DIR REQUEST.json OUT_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

comfyui_dir, request_path, out_dir = (Path(arg) for arg in sys.argv[1:4])
request = json.loads(request_path.read_text())
sys.path.insert(0, str(comfyui_dir))
sys.argv = [sys.argv[0], "--cpu"]

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

import comfy.model_base  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.supported_models_base  # noqa: E402
import comfy.text_encoders.llama as llama  # noqa: E402
import comfy.text_encoders.qwen_image as qwen_image  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

tiny = Path(request["tiny_pipeline"])
text_config = json.loads((tiny / "text_encoder" / "config.json").read_text())
text_config = text_config.get("text_config", text_config)
# Qwen25_7BVLI_Config keeps head_dim and rope_dims as class attributes (no constructor argument): set them to
# the tiny encoder's values in this throw-away process.
llama.Qwen25_7BVLI_Config.head_dim = text_config["hidden_size"] // text_config["num_attention_heads"]
llama.Qwen25_7BVLI_Config.rope_dims = text_config["rope_parameters"]["mrope_section"]
TINY_TEXT = {key: text_config[key] for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                "num_attention_heads", "num_key_value_heads", "rms_norm_eps")}


class TinyQwen25Model(qwen_image.Qwen25_7BVLIModel):
    """ComfyUI's Qwen2.5-VL clip model with the tiny config (ComfyUI's own passes an empty one)."""

    def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, attention_mask=True,
                 model_options=None):
        comfy.sd1_clip.SDClipModel.__init__(
            self, device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=TINY_TEXT, dtype=dtype,
            special_tokens={"pad": 151643}, layer_norm_hidden_state=False, model_class=llama.Qwen25_7BVLI,
            enable_attention_masks=attention_mask, return_attention_masks=attention_mask,
            model_options=model_options or {})


def tiny_clip(dtype: torch.dtype = torch.float32) -> comfy.sd.CLIP:
    target = comfy.supported_models_base.ClipTarget(qwen_image.QwenImageTokenizer, qwen_image.QwenImageTEModel)
    clip = comfy.sd.CLIP(target, model_options={"qwen25_7b_class": TinyQwen25Model, "dtype": dtype})
    weights = {}
    for file in sorted((tiny / "text_encoder").glob("*.safetensors")):
        # the language model only: these prompts have no image, and ComfyUI's encoder has no lm_head
        weights.update({k: v for k, v in load_file(str(file)).items()
                        if not k.startswith(("model.visual.", "lm_head."))})
    missing, unexpected = clip.load_sd({k: v.to(dtype) for k, v in weights.items()})
    assert not unexpected and not [k for k in missing if not k.startswith("visual.")], (missing, unexpected)
    return clip


def tiny_model() -> comfy.model_patcher.ModelPatcher:
    config = json.loads((tiny / "transformer" / "config.json").read_text())
    unet = {"image_model": "qwen_image", **{key: config[key] for key in (
        "patch_size", "in_channels", "out_channels", "num_layers", "attention_head_dim", "num_attention_heads",
        "joint_attention_dim", "axes_dims_rope")}}
    model_config = comfy.supported_models.QwenImage(unet)
    model_config.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.QwenImage(model_config, device="cpu")
    weights = {}
    for file in sorted((tiny / "transformer").glob("*.safetensors")):
        weights.update(load_file(str(file)))
    missing, unexpected = model.diffusion_model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return comfy.model_patcher.ModelPatcher(model, load_device="cpu", offload_device="cpu")


def sequence(clip, tokens) -> list:
    """The encoder's token list: ids as ints, inserted vectors as the name of the placeholder entry they are."""
    names = {}
    tokenizer = clip.tokenizer
    for placeholder in getattr(tokenizer, "placeholders", ()):
        for index, entry in enumerate(placeholder.registered.token_strings):
            names[id(tokenizer._rows[placeholder.registered.token_ids[index]])] = entry
    return [names.get(id(t), "?tensor") if torch.is_tensor(t) else int(t) for t, *_ in tokens["qwen25_7b"][0]]


def encode(clip, prompt: str, tensors: dict, key: str) -> list:
    tokens = clip.tokenize(prompt)
    encoder = clip.cond_stage_model.qwen25_7b
    embeds = encoder.process_tokens([[t for t, *_ in tokens["qwen25_7b"][0]]], torch.device("cpu"))[0]
    tensors[f"{key}.input_embeds"] = embeds[0].float().contiguous()
    tensors[f"{key}.cond"] = clip.encode_from_tokens(tokens)[0].float().contiguous()
    return sequence(clip, tokens)


def error_of(call) -> str | None:
    try:
        call()
    except Exception as error:  # the message ComfyUI would show
        return f"{type(error).__name__}: {error}"
    return None


def validate_workflow(path: Path, models: Path) -> dict:
    """ComfyUI's own check of an API-format workflow (what its server runs before queueing a prompt).

    Model files need only exist by name, so empty stand-ins are made for the loaders' choices; the extra nodes
    the workflow uses are loaded the way ComfyUI loads its built-in extras.
    """
    import execution

    workflow = json.loads(path.read_text())
    for module in ("nodes_sd3.py", "nodes_model_advanced.py"):
        asyncio.run(nodes.load_custom_node(str(comfyui_dir / "comfy_extras" / module), module_parent="comfy_extras"))
    for folder, key in (("diffusion_models", "unet_name"), ("text_encoders", "clip_name"), ("vae", "vae_name")):
        (models / folder).mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)
        for node in workflow.values():
            if key in node["inputs"]:
                (models / folder / node["inputs"][key]).touch()
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("zero-prior", workflow, None))
    return {"valid": valid, "error": error, "outputs": outputs, "node_errors": node_errors}


def main() -> None:
    loras = Path(request["loras"])
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    loaded = asyncio.run(nodes.load_custom_node(request["node_package"]))
    node_class = nodes.NODE_CLASS_MAPPINGS["LoadZeroPriorLora"]
    result = {"loaded": loaded, "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get("LoadZeroPriorLora"),
              "input_types": json.loads(json.dumps(node_class.INPUT_TYPES(), default=str)),
              "return_types": list(node_class.RETURN_TYPES), "function": node_class.FUNCTION,
              "tokenizer_length": None, "sequences": {}, "errors": {}}
    tensors: dict[str, torch.Tensor] = {}
    node = node_class()
    stock_clip, model = tiny_clip(), tiny_model()
    stock_clips = {"float32": stock_clip, "bfloat16": tiny_clip(torch.bfloat16)}
    result["tokenizer_length"] = len(stock_clip.tokenizer.qwen25_7b.tokenizer)
    clips, outputs = {"stock": stock_clip}, {}
    for name, steps in request["chains"].items():  # each chain: node after node on the previous outputs
        current_model, current_clip = model, stock_clips[request["chain_dtypes"].get(name, "float32")]
        for step in steps:
            current_model, current_clip = node.load(current_model, current_clip, step["file"], step["strength_model"],
                                                    step["strength_token"])
        clips[name], outputs[name] = current_clip, (current_model, current_clip)
        if name == request["patched_chain"]:
            current_model.patch_model()
            patched = current_model.model.diffusion_model.state_dict()
            for key in request["patched_keys"]:
                tensors[f"patched.{key}"] = patched[key].float().contiguous()
            current_model.unpatch_model()
    for case in request["cases"]:
        key = f"{case['clip']}.{case['name']}"
        result["sequences"][key] = encode(clips[case["clip"]], case["prompt"], tensors, key)
    coverage_file = loras / request["coverage_file"]
    lora = comfy.utils.load_torch_file(str(coverage_file), safe_load=True)
    from zero_prior.comfyui.loading import lora_patches  # the node's own mapping, through ComfyUI's key map

    patches, left = lora_patches(model, lora)
    result["coverage"] = {"total": len(lora), "mapped": len(lora) - len(left), "left": left,
                          "patched_layers": len(patches)}
    sd1_clip = comfy.sd.CLIP(no_init=True)
    sd1_clip.tokenizer = comfy.sd1_clip.SD1Tokenizer()
    bad = {
        "plain": lambda: node.load(model, stock_clip, request["plain_file"], 1.0, 1.0),
        "family": lambda: node.load(model, stock_clip, request["zimage_file"], 1.0, 1.0),
        "hidden": lambda: node.load(model, stock_clip, request["wide_file"], 1.0, 1.0),
        "unmapped": lambda: node.load(model, stock_clip, request["unmapped_file"], 1.0, 1.0),
        "other_width": lambda: node.load(model, stock_clip, request["other_width_file"], 1.0, 1.0),
        "not_qwen_clip": lambda: node.load(model, sd1_clip, request["coverage_file"], 1.0, 1.0),
        "not_qwen_model": lambda: node.load(stock_clip.patcher, stock_clip, request["coverage_file"], 1.0, 1.0),
        # on the first chain's outputs: the same token with another vector, another strength, or as it is
        "clash": lambda: node.load(*outputs[request["base_chain"]], request["clash_file"], 1.0, 1.0),
        "strength": lambda: node.load(*outputs[request["base_chain"]], request["coverage_file"], 1.0, 0.5),
        "again": lambda: node.load(*outputs[request["base_chain"]], request["coverage_file"], 1.0, 1.0),
    }
    result["errors"] = {name: error_of(call) for name, call in bad.items()}
    result["workflow"] = validate_workflow(Path(request["workflow"]), out_dir / "models")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "tensors.safetensors"))
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


main()
