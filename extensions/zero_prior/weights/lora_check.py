"""Reading a LoRA the way diffusers will apply it, and checking every tensor against the model first.

diffusers' ``load_lora_weights`` wraps the transformer's layers one by one and
fails part-way on a tensor that does not fit, leaving the modules it already
wrapped behind. So before anything is touched, ``read_lora`` reads the file
through the pipeline's own converter (``lora_state_dict``, exactly what
``load_lora_weights`` will load) and ``check_fits`` checks that every tensor is
a ``lora_A``/``lora_B`` of a linear layer the transformer has, with the
layer's shapes and one rank per pair. ``lora_digest`` identifies the LoRA's
content independently of the file format it came in (the ai-toolkit file and
its diffusers export digest alike), so the loader can tell the same LoRA
loaded twice; it hashes a sample, and ``adapter_holds`` confirms a match
against a live adapter exactly.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from ..errors import FormatError
from .format import DAMAGED_FIX

PREFIX = "transformer."
_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def read_lora(pipe: Any, lora_file: Path, label: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The LoRA as the pipeline's converter reads it (``transformer.<module>.lora_A/B.weight`` keys).

    Also returns the file's diffusers adapter metadata (``lora_adapter_metadata``: alpha, rank pattern...),
    None for a file without it, as ``load_lora_weights`` reads it from the file.
    """
    # Folder + weight_name: diffusers refuses a bare file path under HF_HUB_OFFLINE=1.
    try:
        state, metadata = pipe.lora_state_dict(str(lora_file.parent), weight_name=lora_file.name,
                                               return_lora_metadata=True)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FormatError(
            f"{label}: diffusers cannot read it as a {type(pipe).__name__} LoRA ({reason}); pass a LoRA trained for "
            "this model (zero_prior_trainer's or ai-toolkit's .safetensors)"
        ) from None
    return dict(state), metadata


def check_fits(transformer: torch.nn.Module, state: dict[str, torch.Tensor], label: str) -> list[str]:
    """Refuse (``FormatError``, naming the tensor) a LoRA that does not fit ``transformer``; return its modules."""
    if not state:
        raise FormatError(f"{label}: holds no LoRA tensors; pass the LoRA file the training wrote")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in sorted(state.items()):
        if not key.startswith(PREFIX) or not key.endswith(_SUFFIXES):
            raise FormatError(
                f"{label}: tensor {key!r} is not a transformer lora_A/lora_B weight; zero-prior loads transformer "
                "LoRAs (peft or kohya keys) only: pass such a file, or load this one with diffusers directly"
            )
        module, part = split_key(key)
        pairs.setdefault(module, {})[part] = tensor
    for module_name, parts in pairs.items():
        _check_pair(transformer, module_name, parts, label)
    return sorted(pairs)


# Elements of each LoRA tensor that lora_digest hashes, evenly spaced. The digest finds candidates: a match with a
# live adapter is confirmed tensor by tensor (adapter_holds); a fused LoRA's record has no adapter left and is
# trusted on the sample. A fixed count keeps the digest off the tensors' bytes: a rank-16 LoRA over two Qwen-Image
# blocks (48 tensors, 7 MB) takes 0.33 ms, against 0.8 ms for every 31st element and 3-5 ms for every element (its
# full sha256), on a ~25 ms load.
DIGEST_SAMPLES = 64
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # numpy has no bfloat16


def lora_digest(state: dict[str, torch.Tensor], samples: int | None = DIGEST_SAMPLES) -> str:
    """sha256 over the converted tensors' names, dtypes, shapes and ``samples`` evenly spaced elements of each.

    The same LoRA gives the same digest. Every element is hashed with None, as
    records written before ``DIGEST_SAMPLES`` were. Two LoRAs that agree on every
    sampled element share a digest, so a match is a candidate: ``adapter_holds`` decides.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)};".encode())
        elements = tensor.reshape(-1).view(_SAME_SIZE_INT[tensor.element_size()]).numpy()  # the bytes, no copy
        if samples is not None:
            elements = elements[::_sample_step(elements.size, tensor.shape[-1] if tensor.dim() else 1, samples)]
        digest.update(elements.tobytes())
    return digest.hexdigest()


def _sample_step(size: int, width: int, samples: int) -> int:
    """The stride of ``samples`` elements over ``size``, made prime to the row ``width`` so it visits every column.

    A lora_B of shape [3072, 16] has 49152 elements: a plain stride of 768 would read column 0 of each row only.
    """
    step = max(1, size // samples)
    while math.gcd(step, width) != 1:
        step += 1
    return step


def adapter_holds(transformer: torch.nn.Module, adapter_name: str, state: dict[str, torch.Tensor]) -> bool:
    """Whether the live adapter ``adapter_name`` holds the tensors of ``state`` (in the layers' dtype), and no others.

    Every tensor of ``state`` must be in a layer of that adapter with equal
    values, and the adapter must cover no other layer. Alphas are
    ``same_scales``' part: the digest leaves them out, so that an ai-toolkit
    file and its export (whose adapter metadata records alpha) are one LoRA.
    """
    covered = 0
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer) and adapter_name in getattr(module, "lora_A", {}):
            covered += 1
    if 2 * covered != len(state):
        return False
    for key, tensor in state.items():
        module_name, part = split_key(key)
        layers = getattr(transformer.get_submodule(module_name), part, None)
        if layers is None or adapter_name not in layers:
            return False
        live = layers[adapter_name].weight.detach()
        if live.shape != tensor.shape or not torch.equal(live, tensor.to(device=live.device, dtype=live.dtype)):
            return False
    return True


# Rows of a module's weight that ``weight_digest`` hashes: a fused LoRA adds B @ A, which changes every row whose
# row of B is not zero (all of them, once trained); 16 evenly spaced rows of a 3072-row weight take 0.08 ms
# (64 rows, as records written before took, 0.3 ms; the whole weight 40-70 ms on the CPU, plus its copy off a GPU).
DIGEST_ROWS = 16


def weight_digest(transformer: torch.nn.Module, module_name: str, rows: int | None = DIGEST_ROWS) -> str:
    """sha256 of a module's base weight (under a peft wrapper too): tells whether a LoRA was fused into it.

    ``rows`` evenly spaced rows are hashed (every row with None, as records written before ``DIGEST_ROWS``
    were); the bytes are hashed as stored, so the digest is the same on every device.
    """
    module = transformer.get_submodule(module_name)
    weight = getattr(module, "base_layer", module).weight.detach()
    if rows is not None:  # row by row: a strided gather runs a parallel kernel that costs ~10 ms on a busy CPU
        weight = torch.stack([weight[row] for row in range(0, weight.shape[0], max(1, -(-weight.shape[0] // rows)))])
    weight = weight.cpu().contiguous()
    return hashlib.sha256(weight.view(torch.uint8).numpy()).hexdigest()


def same_scales(
    transformer: torch.nn.Module, adapter_name: str, state: dict[str, torch.Tensor], metadata: dict[str, Any] | None
) -> bool:
    """Whether ``state`` with adapter ``metadata`` would get the live adapter's scale (alpha / rank) in every layer.

    The scale diffusers gives each layer: from the file's ``lora_adapter_metadata`` (alpha and rank, their
    per-module patterns, rslora) read as peft reads it, else alpha == rank (scale 1) when every rank is equal;
    an ai-toolkit file and its diffusers export, whose metadata records alpha == rank, agree. A file without
    metadata whose ranks differ counts as agreeing (diffusers' alpha then depends on the tensors' order).
    """
    from peft import LoraConfig
    from peft.utils.other import get_pattern_key

    ranks = {split_key(key)[0]: tensor.shape[0] for key, tensor in state.items() if key.endswith(".lora_A.weight")}
    if metadata is None:
        if len(set(ranks.values())) != 1:
            return True
        expected = dict.fromkeys(ranks, 1.0)
    else:  # the transformer's entries, as diffusers' load_lora_adapter takes them
        config = LoraConfig(**{key[len(PREFIX):]: value for key, value in metadata.items() if key.startswith(PREFIX)})
        expected = {}
        for module_name in ranks:
            alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module_name),
                                             config.lora_alpha)
            rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module_name), config.r)
            expected[module_name] = alpha / (math.sqrt(rank) if config.use_rslora else rank)
    return all(math.isclose(base_scale(transformer.get_submodule(module_name), adapter_name), scale, rel_tol=1e-6)
               for module_name, scale in expected.items())


def base_scale(layer: BaseTunerLayer, adapter_name: str) -> float:
    """The scale peft gives ``adapter_name`` in ``layer`` at strength 1: alpha / rank (alpha / sqrt(rank), rslora)."""
    rank = layer.r[adapter_name]
    return layer.lora_alpha[adapter_name] / (math.sqrt(rank) if layer.use_rslora.get(adapter_name) else rank)


def split_key(key: str) -> tuple[str, str]:
    """``transformer.<module>.lora_A.weight`` -> (``<module>``, ``lora_A``)."""
    return key[len(PREFIX):].rsplit(".", 2)[0], key.rsplit(".", 2)[1]


def _check_pair(transformer: torch.nn.Module, module_name: str, parts: dict[str, torch.Tensor], label: str) -> None:
    where = f"{label}: the LoRA for transformer module {module_name!r}"
    fix = "the file was trained for another model: load it into the pipeline it was trained for"
    try:
        module = transformer.get_submodule(module_name)
    except AttributeError:
        raise FormatError(f"{where} targets a module this pipeline's transformer does not have; {fix}") from None
    module = getattr(module, "base_layer", module)  # already wrapped by an earlier adapter
    if not (hasattr(module, "in_features") and hasattr(module, "out_features")):
        raise FormatError(f"{where} targets a {type(module).__name__}, not a linear layer; {fix}")
    missing = [part for part in ("lora_A", "lora_B") if part not in parts]
    if missing:
        raise FormatError(f"{where} has no {missing[0]} weight (a LoRA needs both halves); {DAMAGED_FIX}")
    down, up = parts["lora_A"], parts["lora_B"]
    expected_down, expected_up = [down.shape[0], module.in_features], [module.out_features, down.shape[0]]
    if down.dim() != 2 or up.dim() != 2 or list(down.shape) != expected_down or list(up.shape) != expected_up:
        raise FormatError(
            f"{where} has lora_A {list(down.shape)} and lora_B {list(up.shape)}, but the layer takes "
            f"{module.in_features} "
            f"inputs and gives {module.out_features} outputs (expected [rank, {module.in_features}] and "
            f"[{module.out_features}, rank]); {fix}"
        )
