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

import hashlib
import json
import os
from typing import Any

import torch
from toolkit.extension import Extension

PROBE_FILE = "probe.json"


class ZeroPriorProbeExtension(Extension):
    uid = "zero_prior_probe"
    name = "zero-prior test probe"

    @classmethod
    def get_process(cls) -> type:
        from extensions.zero_prior.aitk.trainer import ZeroPriorTrainer

        class ZeroPriorProbe(ZeroPriorTrainer):
            """Records text-encoder digests and the prompt embeddings each sample used."""

            def hook_after_model_load(self) -> None:
                self.probe_text_encoder = self.sd.text_encoder[0]
                self.probe_start = _digests(self.probe_text_encoder)  # before the placeholder is added
                self.probe_samples: list[dict[str, Any]] = []
                super().hook_after_model_load()

            def sample(self, step: int | None = None, is_first: bool = False) -> None:
                captured: list[tuple[str, torch.Tensor]] = []
                encode = self.sd.encode_prompt

                def capture(prompt: Any, *args: Any, **kwargs: Any) -> Any:
                    embeds = encode(prompt, *args, **kwargs)
                    captured.append((prompt, embeds.text_embeds.detach().clone()))
                    return embeds

                self.sd.encode_prompt = capture
                try:
                    super().sample(step, is_first)
                finally:
                    del self.sd.encode_prompt  # back to the class method
                token = self.zero_prior.placeholder.token
                for prompt, used in captured:
                    if token in prompt:
                        reference = self._encode_with_vector_in_row(prompt)
                        self.probe_samples.append({
                            "step": step,
                            "prompt": prompt,
                            "equal": bool(torch.equal(used, reference)),
                            "vector_norm": float(self.placeholders[0].vectors.norm()),
                        })

            def _encode_with_vector_in_row(self, prompt: str) -> torch.Tensor:
                """The prompt encoded the way an inference loader applies the vector: written into its row."""
                placeholder = self.placeholders[0]
                embedding = self.sd.text_encoder[0].get_input_embeddings()
                ids = list(placeholder.registered.token_ids)
                saved = embedding.weight[ids].clone()
                placeholder.detach()
                try:
                    with torch.no_grad():
                        embedding.weight[ids] = placeholder.vectors.to(embedding.weight.dtype)
                        return self.sd.encode_prompt(prompt, force_all=True).text_embeds.detach().clone()
                finally:
                    with torch.no_grad():
                        embedding.weight[ids] = saved
                    placeholder.attach(embedding)

            def done_hook(self) -> None:
                super().done_hook()
                end = _digests(self.probe_text_encoder)
                changed = sorted(name for name, digest in self.probe_start.items() if end[name] != digest)
                result = {
                    "text_encoder_tensors": len(self.probe_start),
                    "text_encoder_changed": changed,
                    "samples": self.probe_samples,
                }
                with open(os.path.join(self.training_folder, PROBE_FILE), "w", encoding="utf-8") as handle:
                    json.dump(result, handle, indent=2)

        return ZeroPriorProbe


def _digests(module: torch.nn.Module) -> dict[str, str]:
    return {
        name: hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for name, tensor in module.state_dict().items()
    }


AI_TOOLKIT_EXTENSIONS = [ZeroPriorProbeExtension]
