"""Pivot-then-cache: after ``placeholder.stop_step`` the run continues like the baseline.

The placeholder's only cost over ordinary LoRA training is the 7B text encoder
running forward and backward every step. Once the vector is frozen nothing in
a prompt's embedding changes any more, so at the pivot every prompt the run
can still ask for is encoded once with the final vector: each training
caption as the data loader produces it (trigger injected, and the empty
caption when caption dropout is on) and each sample prompt. The text encoder
is then unloaded exactly as ai-toolkit unloads it for its own cached
embeddings, and ``FrozenPrompts`` answers every later ``encode_prompt``.

Settings that make the set of captions open-ended (shuffled or dropped
caption parts, random triggers) are refused by ``aitk.settings`` when
``stop_step`` is set; a prompt that still was not encoded raises, naming it,
rather than training on something else.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Sequence

import torch
from toolkit.data_loader import get_dataloader_datasets
from toolkit.prompt_utils import PromptEmbeds, concat_prompt_embeds

from ...errors import PlaceholderError


class FrozenPrompts:
    """Prompt embeddings encoded once at the pivot, kept on the CPU, collated per batch on request."""

    def __init__(self, embeds: dict[str, PromptEmbeds], pivot_step: int) -> None:
        self._embeds = embeds
        self.pivot_step = pivot_step

    def __len__(self) -> int:
        return len(self._embeds)

    @property
    def prompts(self) -> list[str]:
        """The encoded prompts, in the order they were encoded."""
        return list(self._embeds)

    def lookup(self, prompts: Sequence[str], device: torch.device) -> PromptEmbeds:
        """The batch's embeddings, right-padded with zero rows and masked as a batched encode pads them."""
        missing = [prompt for prompt in prompts if prompt not in self._embeds]
        if missing:
            raise PlaceholderError(
                f"zero-prior: the prompt {missing[0]!r} was not among the {len(self._embeds)} prompts encoded at "
                f"the pivot (step {self.pivot_step}) and the text encoder is unloaded; a caption setting produced "
                "a new caption after the pivot. Remove placeholder.stop_step, or the setting that varies captions"
            )
        batch = [copy.copy(self._embeds[prompt]).to(device) for prompt in prompts]
        return concat_prompt_embeds(batch)


def encode_once(prompts: Iterable[str], encode: Callable[[str], PromptEmbeds], pivot_step: int) -> FrozenPrompts:
    """Encode each distinct prompt alone, without gradient, and keep the result on the CPU.

    One prompt at a time, so a row never carries another row's padding; a
    batch is rebuilt by ``lookup`` exactly as ``encode_prompt`` pads one.
    """
    embeds: dict[str, PromptEmbeds] = {}
    with torch.no_grad():
        for prompt in dict.fromkeys(prompts):
            # PromptEmbeds' own detach/to: the embeddings may be one tensor or a list of per-prompt tensors.
            embeds[prompt] = encode(prompt).detach().to("cpu")
    return FrozenPrompts(embeds, pivot_step)


def training_captions(loaders: Iterable[object], trigger_word: str | None, inject: Callable[..., str]) -> list[str]:
    """Every caption the data loaders can hand the trainer, as ``process_general_training_batch`` finishes it.

    Per item: its caption without dropout, and the empty caption when its
    dataset drops captions; then ``inject`` adds the trigger word the way
    ai-toolkit does (added when missing, except for regularisation items).
    """
    captions: list[str] = []
    random_state = random.getstate()  # load_caption draws from the global stream; keep the training's
    try:
        for loader in loaders:
            for dataset in get_dataloader_datasets(loader):
                for item in dataset.file_list:
                    for caption in _item_captions(item, dataset.caption_dict):
                        if trigger_word is not None:
                            caption = inject(caption, trigger=trigger_word, add_if_not_present=not item.is_reg)
                        captions.append(caption)
    finally:
        random.setstate(random_state)
    return list(dict.fromkeys(captions))


def _item_captions(item: object, caption_dict: dict | None) -> list[str]:
    """The caption ``load_caption`` gives the item with caption dropout off, plus ``""`` when dropout is on."""
    probe = copy.copy(item)  # load_caption sets attributes; leave the dataset's item untouched
    probe.dataset_config = copy.copy(item.dataset_config)
    probe.dataset_config.caption_dropout_rate = 0.0
    probe.load_caption(caption_dict)
    captions = [probe.caption]
    if item.dataset_config.caption_dropout_rate > 0:
        captions.append("")
    return captions
