"""24 GB proof: config_examples/zero_prior_24gb.yaml's memory on the full-size Qwen-Image, capped at 24 GiB.

Builds the components the way ai-toolkit builds them for that config, with
random weights at Qwen-Image's real sizes (configs from gpu_step.py):

- text encoder (Qwen2.5-VL 7B, vision tower dropped): bf16 on the device,
  then optimum-quanto qfloat8 (``quantize_te: true``, ``qtype_te: qfloat8``);
  its embedding stays bf16; the placeholder vector is spliced in by the
  extension's own hook and ``PrefixCache`` encodes (``prefix_cache: true``);
- transformer (20.4B): every linear of the 60 blocks stored as ai-toolkit's
  ``uint3`` stores it (3-bit codes in a 2-bit and a 1-bit plane, a bf16
  scale and a uint8 zero point per 64 inputs) and dequantized to bf16 in
  forward, a frozen bf16 rank-16 side LoRA standing in for the accuracy
  recovery adapter, and the trained rank-16 LoRA in fp32 with its input cast
  to fp32 (as ai-toolkit's LoRA module does); the other layers stay bf16;
  gradient checkpointing on.

Then ``--steps`` zero-prior steps at ``--resolution`` px (text encoder forward
and backward to the vector, flow-matching loss, AdamW on LoRA + vector), the
pivot (prompt encoded once without gradient, text encoder deleted,
``torch.cuda.empty_cache()``), and ``--steps`` more with the cached
embedding. Each phase's peak allocated/reserved memory is recorded; the
verdict is PASS when no phase ran out of memory under the cap and every
peak reserved plus the CUDA context (memory outside PyTorch's allocator) fits
in ``--budget-gib``. The cap given to the allocator is the budget minus the
context measured before anything is allocated.

Where bitsandbytes is missing (the GPU machine has none), torch AdamW stands in
for ``adamw8bit``; its fp32 moments take 6 B per LoRA weight more (0.82 GiB at
full size), so the cap and the budget are widened by exactly that
(``fp32_moments_allowance_gib``) and the verdict stays the config's. The adapter
and the quantized weights are random stand-ins: memory and kernels like
ai-toolkit's, numbers not.

``--size tiny`` runs the same code on the CPU (no cap; peak RSS is reported)
to check the script before spending GPU time.

    python benchmarks/gpu_24gb.py --tokenizer DIR [--size full] [--steps 4] [--out gpu_24gb.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import types
from typing import Any

import torch
from gpu_step import SIZES, flow_loss, text_encoder_config
from torch import nn

# A ~100-token caption (99 tokens before the placeholder is registered, 95 after), token first
# as ai-toolkit puts the trigger; the encoder sees it inside the 34 + 5 token template.
CAPTION = (
    "<zwx>, a professional photograph of a woman standing in a sunlit garden in late spring, wearing a light "
    "linen dress and a wide straw hat, holding a small wicker basket filled with freshly picked strawberries, "
    "tall rose bushes and lavender behind her, an old stone wall covered in ivy, soft golden hour light from "
    "the left, shallow depth of field, natural skin texture, calm smile, looking slightly past the camera, "
    "shot on a full-frame camera with an 85mm lens"
)
GROUP = 64  # inputs per scale/zero point (ai-toolkit's uint3)
LORA_RANK = 16  # network.linear in the config
ARA_RANK = 16  # the Qwen-Image uint3 adapter is rank 16 (its model card)
GIB = 2**30


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``bits``-bit codes (uint8, numel a multiple of 8) packed ``8 // bits`` to a byte."""
    codes = codes.reshape(-1, 8 // bits)
    packed = torch.zeros(codes.shape[0], dtype=torch.uint8, device=codes.device)
    for slot in range(codes.shape[1]):
        packed |= codes[:, slot] << (slot * bits)
    return packed


def _unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of ``_pack``: a flat uint8 tensor of codes."""
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)


class Uint3Linear(nn.Module):
    """A frozen linear kept at 3 bits per weight plus a scale and zero point per ``GROUP`` inputs.

    Asymmetric per-group quantization; the codes live in a 2-bit and a 1-bit
    plane (3/8 byte per weight). ``forward`` dequantizes to the activation
    dtype outside autograd and calls ``F.linear``, so autograd keeps the
    dequantized weight for the input gradient exactly as a dequantize-then-
    linear module does: one block's worth while a checkpointed block recomputes.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.out_features, self.in_features = weight.shape
        if self.in_features % GROUP:
            raise ValueError(f"in_features {self.in_features} is not a multiple of the group size {GROUP}")
        grouped = weight.view(self.out_features, -1, GROUP)
        low = grouped.amin(dim=2).clamp(max=0)
        high = grouped.amax(dim=2).clamp(min=0)
        scale = ((high - low) / 7).clamp(min=torch.finfo(torch.float32).eps)
        zero = (-low / scale).round().clamp(0, 7)
        codes = (grouped / scale.unsqueeze(2)).round().add(zero.unsqueeze(2)).clamp(0, 7).to(torch.uint8)
        self.register_buffer("low_bits", _pack(codes & 3, 2))
        self.register_buffer("high_bit", _pack(codes >> 2, 1))
        self.register_buffer("scale", scale.to(weight.dtype))
        self.register_buffer("zero", zero.to(torch.uint8))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        codes = _unpack(self.low_bits, 2) | (_unpack(self.high_bit, 1) << 2)
        weight = codes.view(self.out_features, -1, GROUP).to(dtype)
        weight -= self.zero.unsqueeze(2).to(dtype)
        weight *= self.scale.unsqueeze(2).to(dtype)
        return weight.view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            weight = self.dequantized(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, weight, bias)


class AdaptedLinear(nn.Module):
    """One transformer-block linear of a 24 GB run: uint3 base + frozen bf16 adapter + trained fp32 LoRA."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        device, dtype = linear.weight.device, linear.weight.dtype
        n_in, n_out = linear.in_features, linear.out_features
        self.base = Uint3Linear(linear)
        self.ara_down = nn.Linear(n_in, ARA_RANK, bias=False, device=device, dtype=dtype)
        self.ara_up = nn.Linear(ARA_RANK, n_out, bias=False, device=device, dtype=dtype)
        nn.init.normal_(self.ara_up.weight, std=1e-4)
        self.lora_down = nn.Linear(n_in, LORA_RANK, bias=False, device=device, dtype=torch.float32)
        self.lora_up = nn.Linear(LORA_RANK, n_out, bias=False, device=device, dtype=torch.float32)
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x) + self.ara_up(self.ara_down(x))
        # ai-toolkit's LoRA module runs in its parameters' dtype (fp32) on an fp32 copy of the input
        return out + self.lora_up(self.lora_down(x.float())).to(out.dtype)


def _adapt_linears(block: nn.Module) -> None:
    """Replace every ``nn.Linear`` inside ``block`` by an ``AdaptedLinear`` (freeing its full weight)."""
    for name, child in list(block.named_children()):
        if isinstance(child, nn.Linear):
            setattr(block, name, AdaptedLinear(child))
        else:
            _adapt_linears(child)


def import_quanto() -> Any:
    """``optimum.quanto``, also where its optional save/load helpers fail to import against this transformers."""
    try:
        import optimum.quanto as quanto
    except ImportError as error:  # optimum/quanto/models imports transformers/diffusers internals by name
        # the submodules imported before the failure stay cached (their torch ops are registered once)
        sys.modules["optimum.quanto.models"] = types.ModuleType("optimum.quanto.models")
        import optimum.quanto as quanto
        print(f"optimum.quanto imported without its models helpers ({error})", flush=True)
    return quanto


def build_text_encoder(size: dict[str, Any], device: str, dtype: torch.dtype) -> nn.Module:
    """Qwen2.5-VL built on ``device`` in ``dtype``, vision tower dropped, then quanto qfloat8 as ai-toolkit does."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    quanto = import_quanto()

    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            text_encoder = Qwen2_5_VLForConditionalGeneration(text_encoder_config(size))
    finally:
        torch.set_default_dtype(default_dtype)
    text_encoder.model.visual = None
    text_encoder.requires_grad_(False).eval()
    quanto.quantize(text_encoder, weights=quanto.qfloat8)
    quanto.freeze(text_encoder)
    return text_encoder


def build_transformer(size: dict[str, Any], device: str, dtype: torch.dtype) -> nn.Module:
    """Qwen-Image's transformer, one block at a time: built in ``dtype``, then adapted (never all full-size)."""
    from diffusers import QwenImageTransformer2DModel
    from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock

    config = dict(size["transformer"])
    num_layers = config.pop("num_layers")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = QwenImageTransformer2DModel(
                patch_size=2, in_channels=64, out_channels=16, guidance_embeds=False, num_layers=0, **config
            )
            for _ in range(num_layers):
                block = QwenImageTransformerBlock(dim=transformer.inner_dim,
                                                  num_attention_heads=config["num_attention_heads"],
                                                  attention_head_dim=config["attention_head_dim"])
                _adapt_linears(block)
                transformer.transformer_blocks.append(block)
    finally:
        torch.set_default_dtype(default_dtype)
    transformer.requires_grad_(False)
    for module in transformer.modules():
        if isinstance(module, AdaptedLinear):
            module.lora_down.requires_grad_(True)
            module.lora_up.requires_grad_(True)
    transformer.enable_gradient_checkpointing()
    return transformer


class Meter:
    """Peak memory per phase: the CUDA allocator's on a GPU, the process's peak RSS on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict[str, float]:
        if not self.cuda:  # RSS peaks only grow: a lifetime maximum up to now
            return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}
        torch.cuda.synchronize()
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
                "allocated_after_gib": torch.cuda.memory_allocated() / GIB}


def context_bytes() -> int:
    """Device memory in use that PyTorch's allocator does not hold (CUDA context, kernels, libraries)."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def make_optimizer(groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
    """The config's adamw8bit where bitsandbytes is installed (on a GPU), else torch AdamW (fp32 moments)."""
    if device.type == "cuda":
        try:
            import bitsandbytes

            return bitsandbytes.optim.AdamW8bit(groups, lr=1e-4, eps=1e-6)
        except ImportError:
            pass
    # foreach=False: per-tensor updates without all-parameter temporaries, as adamw8bit's
    return torch.optim.AdamW(groups, lr=1e-4, foreach=False)


def token_counts(tokenizer: Any, template: str, placeholder_ids: tuple[int, ...]) -> dict[str, int]:
    """Positions the text encoder runs on, and those from the placeholder on (the prefix cache's gradient pass)."""
    ids = tokenizer(template.format(CAPTION)).input_ids
    first = next(i for i, token in enumerate(ids) if token in placeholder_ids)
    return {"text_encoder_positions": len(ids), "positions_from_placeholder": len(ids) - first}


def train_steps(transformer: nn.Module, optimizer: torch.optim.Optimizer, encode, steps: int, resolution: int,
                generator: torch.Generator, vectors: torch.Tensor | None) -> dict[str, Any]:
    """``steps`` optimizer steps; ``encode()`` gives (embeds, mask) per step. Returns step times and grad norms."""
    holder = types.SimpleNamespace(transformer=transformer)
    times, losses, vector_grads = [], [], []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        embeds, mask = encode()
        loss = flow_loss(holder, (embeds, mask), resolution, generator)
        loss.backward()
        if vectors is not None:
            vector_grads.append(float(vectors.grad.norm()) if vectors.grad is not None else 0.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        times.append(time.perf_counter() - start)
    result: dict[str, Any] = {"steps": steps, "step_s": times, "loss": losses}
    if steps > 1:
        result["median_step_s_after_first"] = statistics.median(times[1:])
    if vectors is not None:
        result["vector_grad_norm"] = vector_grads
    return result


def run(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, meter: Meter,
        report: dict[str, Any]) -> None:
    """Build, train with the token, pivot, train on cached embeddings; fills ``report`` phase by phase."""
    from transformers import Qwen2Tokenizer

    from zero_prior.placeholder.config import PlaceholderConfig
    from zero_prior.placeholder.prepare import add_placeholders
    from zero_prior.training.prefix_cache import PrefixCache

    size = SIZES[args.size]
    phases = report["phases"]

    meter.start()
    started = time.perf_counter()
    report["phase"] = "load"
    # ai-toolkit's order with low_vram: transformer parked on the CPU while the text encoder
    # loads in bf16 and is quantized on the device; here the encoder simply comes first.
    text_encoder = build_text_encoder(size, str(device), dtype)
    transformer = build_transformer(size, str(device), dtype)
    tokenizer = Qwen2Tokenizer.from_pretrained(args.tokenizer)
    [placeholder] = add_placeholders(text_encoder, tokenizer, [PlaceholderConfig()])
    cache = PrefixCache(text_encoder, tokenizer, placeholder.registered.token_ids)
    lora = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = make_optimizer([{"params": lora, "weight_decay": 0.01},
                                {"params": [placeholder.vectors], "weight_decay": 0.0, "lr": 5e-4}], device)
    report["optimizer"] = type(optimizer).__name__
    if device.type == "cuda" and isinstance(optimizer, torch.optim.AdamW):
        # adamw8bit keeps 2 B of moments per LoRA weight, AdamW 8 B: widen the cap (and the
        # budget the verdict uses) by exactly that, so the proof stays adamw8bit's
        allowance = sum(p.numel() for p in lora) * 6 / GIB
        report["fp32_moments_allowance_gib"] = allowance
        report["allocator_cap_gib"] += allowance
        torch.cuda.set_per_process_memory_fraction(report["allocator_cap_gib"] / report["total_gib"])
    phases["load"] = {"seconds": time.perf_counter() - started, **meter.read(),
                      "lora_params": sum(p.numel() for p in lora),
                      **token_counts(tokenizer, cache.family.prompt_template, placeholder.registered.token_ids)}
    print(f"built {args.size} on {device} in {phases['load']['seconds']:.0f} s: {phases['load']}", flush=True)

    generator = torch.Generator().manual_seed(0)
    meter.start()
    report["phase"] = "token"
    phases["token"] = train_steps(transformer, optimizer, lambda: cache.encode([CAPTION], device=device),
                                  args.steps, args.resolution, generator, placeholder.vectors)
    phases["token"].update(meter.read())
    print(f"with the token training: {phases['token']}", flush=True)

    meter.start()
    report["phase"] = "pivot"
    with torch.no_grad():
        embeds, mask = cache.encode([CAPTION], device=device)
    frozen = (embeds.detach().cpu(), None if mask is None else mask.cpu())
    placeholder.vectors.requires_grad_(False)
    placeholder.detach()
    before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    cache = text_encoder = embeds = mask = None  # the last references: the encoder's memory can go
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        phases["pivot"] = {"returned_gib": (before - torch.cuda.memory_allocated()) / GIB, **meter.read()}
    else:
        phases["pivot"] = meter.read()
    print(f"pivot: {phases['pivot']}", flush=True)

    meter.start()
    report["phase"] = "cached"
    phases["cached"] = train_steps(
        transformer, optimizer,
        lambda: (frozen[0].to(device), None if frozen[1] is None else frozen[1].to(device)),
        args.steps, args.resolution, generator, None,
    )
    phases["cached"].update(meter.read())
    print(f"after the pivot: {phases['cached']}", flush=True)
    report["phase"] = "done"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="folder of the real Qwen2.5-VL tokenizer")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4, help="steps before and again after the pivot")
    parser.add_argument("--budget-gib", type=float, default=24.0, help="the card's memory (GiB)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    report: dict[str, Any] = {"size": args.size, "resolution": args.resolution, "steps": args.steps,
                              "budget_gib": args.budget_gib, "phases": {}}
    if device.type == "cuda":
        # Before any tensor exists: what a card of budget-gib leaves PyTorch after this process's context.
        free, total = torch.cuda.mem_get_info()
        context = total - free
        cap = args.budget_gib * GIB - context
        torch.cuda.set_per_process_memory_fraction(cap / total)
        report.update(device=torch.cuda.get_device_name(), total_gib=total / GIB,
                      context_at_start_gib=context / GIB, allocator_cap_gib=cap / GIB)
    else:
        report["device"] = "cpu"
    print({k: v for k, v in report.items() if k != "phases"}, flush=True)

    meter = Meter(device)
    started = time.perf_counter()
    try:
        run(args, device, dtype, meter, report)
    except torch.cuda.OutOfMemoryError as error:
        report["out_of_memory"] = {"phase": report["phase"], "message": str(error).splitlines()[0]}
        if device.type == "cuda":
            report["phases"].setdefault(report["phase"], {}).update(meter.read())
    report["seconds"] = time.perf_counter() - started
    if device.type == "cuda":
        report["context_at_end_gib"] = context_bytes() / GIB
        reserved = [phase["peak_reserved_gib"] for phase in report["phases"].values() if "peak_reserved_gib" in phase]
        report["worst_reserved_plus_context_gib"] = max(reserved, default=0.0) + report["context_at_end_gib"]
        budget = args.budget_gib + report.get("fp32_moments_allowance_gib", 0.0)
        fits = report["worst_reserved_plus_context_gib"] <= budget
        report["verdict"] = "PASS" if "out_of_memory" not in report and fits else "FAIL"
    else:
        report["verdict"] = "not judged on the CPU" if "out_of_memory" not in report else "FAIL"
    print(json.dumps({k: report[k] for k in report if k != "phases"}, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    if report["verdict"] == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
