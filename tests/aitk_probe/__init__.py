"""Test-only ai-toolkit extension: ``ZeroPriorTrainer`` plus the observations the integration tests assert.

Some promises can only be checked inside the training process, whose
objects are gone when ``run.py`` exits: every text-encoder tensor stays
bit-identical through real training steps, and each sample during training
encodes its prompt with the placeholder's current vector. The integration
tests link this folder into a staged ai-toolkit as ``extensions/zero_prior_probe``
and run process type ``zero_prior_probe``, which only records; the results go
to ``probe.json`` in the training folder (outside ai-toolkit's checkpoint
folder). It is imported only by ai-toolkit, never by pytest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import torch
from toolkit.extension import Extension

PROBE_FILE = "probe.json"
PIVOT_PROMPTS_FILE = "pivot_prompts.pt"
SAMPLE_EMBEDS_FILE = "sample_embeds.pt"  # the last sampling's prompt embeddings, by prompt
SAMPLE_CONTROLS_FILE = "sample_controls.pt"  # edit models: the control images those prompts were encoded with
RANK_FILE = "rank{}.json"


class ZeroPriorProbeExtension(Extension):
    uid = "zero_prior_probe"
    name = "zero-prior test probe"

    @classmethod
    def get_process(cls) -> type:
        from extensions.zero_prior.aitk.runtime.trainer import ZeroPriorTrainer

        class ZeroPriorProbe(ZeroPriorTrainer):
            """Records text-encoder digests and the prompt embeddings each sample used."""

            def hook_after_model_load(self) -> None:
                self.probe_text_encoder = self.sd.text_encoder[0]
                self.probe_start = _digests(self.probe_text_encoder)  # before the placeholder is added
                self.probe_samples: list[dict[str, Any]] = []
                self.probe_sample_embeds: dict[str, Any] = {}
                self.probe_sample_controls: dict[str, Any] = {}
                self.probe_pivot: dict[str, Any] | None = None
                self.probe_prefix_cache: dict[str, int] | None = None
                super().hook_after_model_load()

            def pivot(self) -> None:
                """Record what the pivot leaves behind; the encoder's weights go to the meta device with it."""
                self.probe_end = _digests(self.probe_text_encoder)
                super().pivot()
                frozen = self.sd.frozen_prompts
                cpu = torch.device("cpu")
                embeds = {prompt: frozen.lookup([prompt], cpu).text_embeds for prompt in frozen.prompts}
                torch.save(embeds, os.path.join(self.training_folder, PIVOT_PROMPTS_FILE))
                self.probe_pivot = {
                    "step": self.step_num,
                    "text_encoder_now": type(self.sd.text_encoder[0]).__name__,
                    "old_text_encoder_devices": sorted({str(t.device) for t in self.probe_text_encoder.parameters()}),
                    "vector_requires_grad": [p.vectors.requires_grad for p in self.placeholders],
                    "sample_prompts_cached": self.sd.sample_prompts_cache is not None,
                }

            def prepare_accelerator(self) -> None:
                """Several CPU processes: accelerate's MULTI_CPU branch wraps even frozen modules (the VAE)
                in DDP, which torch refuses; its multi-GPU branch leaves modules without trainable
                parameters unwrapped. The CPU test runs get the multi-GPU rule."""
                prepare = self.accelerator.prepare

                def multi_gpu_rule(*objects: Any, **kwargs: Any) -> Any:
                    frozen = len(objects) == 1 and isinstance(objects[0], torch.nn.Module) and not any(
                        p.requires_grad for p in objects[0].parameters())
                    return objects[0] if frozen else prepare(*objects, **kwargs)

                self.accelerator.prepare = multi_gpu_rule
                try:
                    super().prepare_accelerator()
                finally:
                    del self.accelerator.prepare

            def hook_before_train_loop(self) -> None:
                super().hook_before_train_loop()
                self.probe_steps: list[dict[str, Any]] = []
                if self.accelerator.num_processes > 1:
                    # Each rank its own noise and timesteps, as separate GPUs without SEED would draw.
                    torch.manual_seed(1000 + self.accelerator.process_index)

            def hook_train_loop(self, batch: Any) -> Any:
                loss_dict = super().hook_train_loop(batch)
                if self.sd.prefix_cache is not None:
                    self.probe_prefix_cache = dataclasses.asdict(self.sd.prefix_cache.stats)
                self.probe_steps.append({
                    "step": self.step_num,
                    "loss": float(loss_dict["loss"]),
                    "vectors": _tensor_digest([p.vectors for p in self.placeholders]),
                    "lora": _tensor_digest([p for p in self.network.parameters()]),
                })
                return loss_dict

            def ensure_params_requires_grad(self, force: bool = False) -> None:
                super().ensure_params_requires_grad(force=force)
                if self.probe_pivot is not None:
                    self.probe_pivot["vector_requires_grad"] += [p.vectors.requires_grad for p in self.placeholders]

            def sample(self, step: int | None = None, is_first: bool = False) -> None:
                captured: list[tuple[str, Embeds, Any, Any]] = []
                encode = self.sd.encode_prompt

                def capture(prompt: Any, *args: Any, **kwargs: Any) -> Any:
                    controls = kwargs.get("control_images")  # edit models: ai-toolkit resizes them in place
                    given = _copied(controls) if controls is not None else None
                    embeds = encode(prompt, *args, **kwargs)
                    captured.append((prompt, _copied(embeds.text_embeds), given, controls))
                    return embeds

                self.sd.encode_prompt = capture
                try:
                    super().sample(step, is_first)
                finally:
                    del self.sd.encode_prompt  # back to the class method
                token = self.zero_prior.placeholder.token
                self.probe_sample_embeds = {prompt: used for prompt, used, _, _ in captured if token in prompt}
                # What the encoder saw of each control image (after ai-toolkit's resize), to encode it again.
                self.probe_sample_controls = {prompt: _copied(seen) for prompt, _, _, seen in captured
                                              if token in prompt and seen is not None}
                for prompt, used, given, _ in captured:
                    if token in prompt:
                        reference = self._encode_with_vector_in_row(prompt, given)
                        self.probe_samples.append({
                            "step": step,
                            "prompt": prompt,
                            "equal": _equal(used, reference),
                            "vector_norm": float(self.placeholders[0].vectors.norm()),
                        })

            def _encode_with_vector_in_row(self, prompt: str, controls: Any = None) -> Embeds:
                """The prompt encoded the way an inference loader applies the vector: written into its row.

                ``controls`` are the sample's control images as ai-toolkit got them (edit models).
                """
                more = {} if controls is None else {"control_images": _copied(controls)}
                placeholder = self.placeholders[0]
                embedding = self.sd.text_encoder[0].get_input_embeddings()
                ids = list(placeholder.registered.token_ids)
                saved = embedding.weight[ids].clone()
                placeholder.detach()
                try:
                    with torch.no_grad():
                        embedding.weight[ids] = placeholder.vectors.to(embedding.weight.dtype)
                        return _copied(self.sd.encode_prompt(prompt, force_all=True, **more).text_embeds)
                finally:
                    with torch.no_grad():
                        embedding.weight[ids] = saved
                    placeholder.attach(embedding)

            def done_hook(self) -> None:
                super().done_hook()
                end = self.probe_end if self.probe_pivot is not None else _digests(self.probe_text_encoder)
                changed = sorted(name for name, digest in self.probe_start.items() if end[name] != digest)
                result = {
                    "text_encoder_tensors": len(self.probe_start),
                    "text_encoder_changed": changed,
                    "samples": self.probe_samples,
                    "pivot": self.probe_pivot,
                    "prefix_cache": self.probe_prefix_cache,
                }
                rank_file = os.path.join(self.training_folder, RANK_FILE.format(self.accelerator.process_index))
                with open(rank_file, "w", encoding="utf-8") as handle:
                    json.dump(self.probe_steps, handle, indent=2)
                if self.accelerator.is_main_process:
                    with open(os.path.join(self.training_folder, PROBE_FILE), "w", encoding="utf-8") as handle:
                        json.dump(result, handle, indent=2)
                    torch.save(self.probe_sample_embeds, os.path.join(self.training_folder, SAMPLE_EMBEDS_FILE))
                    if self.probe_sample_controls:
                        torch.save(self.probe_sample_controls,
                                   os.path.join(self.training_folder, SAMPLE_CONTROLS_FILE))

        return ZeroPriorProbe


Embeds = torch.Tensor | list[torch.Tensor]  # Qwen-Image: one padded tensor; Z-Image: one tensor per prompt


def _copied(tensors: Any) -> Any:
    """A detached copy of a tensor or of (nested) lists of tensors (embeddings, control images)."""
    if isinstance(tensors, (list, tuple)):
        return [_copied(item) for item in tensors]
    return tensors.detach().clone()


def _equal(a: Embeds, b: Embeds) -> bool:
    if isinstance(a, list) != isinstance(b, list):
        return False
    pairs = zip(a, b, strict=True) if isinstance(a, list) else [(a, b)]
    return all(torch.equal(x, y) for x, y in pairs)


def _digests(module: torch.nn.Module) -> dict[str, str]:
    return {
        name: hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for name, tensor in module.state_dict().items()
    }


def _tensor_digest(tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


AI_TOOLKIT_EXTENSIONS = [ZeroPriorProbeExtension]
