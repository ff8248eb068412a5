"""ai-toolkit's ``diff_output_preservation`` for the placeholder trainer: the preservation prompts, no gradient.

SDTrainer encodes its preservation prompts (each caption with its trigger word
replaced by ``train.diff_output_preservation_class``) only on its branch
without text-encoder gradient; ``ZeroPriorTrainer`` takes the branch with
gradient, where SDTrainer leaves them unset (ai-toolkit refuses the option
with ``train_text_encoder``). ``preservation_embeds`` fills them for one step:
it wraps the model's ``encode_prompt`` so that the step's first encode, the
captions', also encodes the same captions with the trigger replaced, as
SDTrainer would, but under ``torch.no_grad``. The settings make the trigger
exactly the token, so those prompts hold no placeholder, and nothing of the
preservation pass reaches the vector; the LoRA gets its preservation loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from toolkit.train_tools import get_torch_dtype


@contextmanager
def preservation_embeds(trainer: Any, batch: Any) -> Iterator[None]:
    """For the span of one ``train_single_accumulation``: set ``trainer.diff_output_preservation_embeds``."""
    config = trainer.train_config
    if not config.diff_output_preservation:
        yield
        return
    model = trainer.sd
    original = model.encode_prompt
    encoded = False

    def replaced(prompts: str | Sequence[str]) -> list[str]:
        listed = [prompts] if isinstance(prompts, str) else list(prompts)
        triggers = [item.trigger_word if item.trigger_word is not None else trainer.trigger_word
                    for item in batch.file_items]
        return [p if t is None else p.replace(t, config.diff_output_preservation_class)
                for p, t in zip(listed, triggers, strict=True)]

    def encode_prompt(prompt: Any, prompt2: Any = None, *args: Any, **kwargs: Any) -> Any:
        nonlocal encoded
        embeds = original(prompt, prompt2, *args, **kwargs)
        if not encoded:
            encoded = True
            with torch.no_grad():
                preserved = original(replaced(prompt), None if prompt2 is None else replaced(prompt2), *args, **kwargs)
            trainer.diff_output_preservation_embeds = preserved.to(trainer.device_torch,
                                                                   dtype=get_torch_dtype(config.dtype))
        return embeds

    model.encode_prompt = encode_prompt  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        del model.encode_prompt
