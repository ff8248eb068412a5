"""``ModelFamily``: what the token code, the prefix cache, the loader and the ai-toolkit glue need to know of a model.

A placeholder token is the same idea on every model whose text encoder is an
LLM: a new tokenizer entry, a vector spliced into the input embedding, a
prompt template it must survive. What differs per family is named here once:
the prompt template and how many leading positions the pipeline drops, how to
reach the tokenizer(s) and text encoder of a diffusers pipeline, which
zero-prior features the family rules out (and why), how to run the
encoder's decoder stack from a given position on, which diffusers pipeline
classes it applies to, and the ai-toolkit arch it trains under. Each family is
one module of ``zero_prior.models`` with one instance of a subclass of this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def base_arch(arch: str) -> str:
    """ai-toolkit's arch without a ``:variant`` tail, which ai-toolkit cuts off (``ModelConfig``).

    >>> base_arch("qwen_image:2512"), base_arch("zimage")
    ('qwen_image', 'zimage')
    """
    return arch.split(":")[0]


@dataclass(frozen=True)
class ModelFamily:
    """One model family; subclasses implement the encoder-specific methods.

    ``name`` is what files and configs call the family; ``aitk_arch`` is
    ai-toolkit's arch for it and ``zero_prior_arch`` the arch this extension
    registers for its placeholder-training subclass.
    """

    name: str
    label: str  # how messages name it
    aitk_arch: str
    zero_prior_arch: str
    pipeline_class: str  # the diffusers pipeline that loads a folder and reads LoRA files of this family
    pipeline_classes: tuple[str, ...]  # every diffusers pipeline the token and LoRA apply to
    prompt_template: str  # ``{}`` is the user's prompt
    drop_idx: int  # leading template positions the pipeline drops from the encoder output
    max_length: int  # the pipeline's tokenizer_max_length (user prompt positions)
    # The pipeline's call argument for classifier-free guidance (on above 1, with the negative prompt).
    cfg_argument: str = "true_cfg_scale"
    # Whether the pipeline encodes every prompt together with control images (``image=``), as edit models do.
    control_images: bool = False
    # Further ai-toolkit archs of the same family (model sizes sharing the template and encoder kind), and the
    # arch of this extension's subclass for each, in the same order.
    other_aitk_archs: tuple[str, ...] = ()
    other_zero_prior_archs: tuple[str, ...] = ()

    def zero_prior_arch_for(self, aitk_arch: str) -> str:
        """The arch of this extension's subclass for ai-toolkit's ``aitk_arch`` (a ``:variant`` tail ignored).

        A family with several model sizes (FLUX.2 [klein] 4B and 9B) has one
        ai-toolkit class per size, so one subclass per size too.
        """
        base = base_arch(aitk_arch)
        if base in self.other_aitk_archs:
            return self.other_zero_prior_archs[self.other_aitk_archs.index(base)]
        return self.zero_prior_arch

    def training_refusal(self) -> str | None:
        """Why zero-prior cannot train this family's placeholder through ai-toolkit, or None when it can."""
        return None

    def prefix_cache_refusal(self) -> str | None:
        """Why ``training.prefix_cache`` cannot encode this family's prompts, or None when it can."""
        return "zero-prior's prefix cache supports this family's text encoder only once it implements hidden_states"

    def pivot_refusal(self) -> str | None:
        """Why ``placeholder.stop_step`` (encode every prompt once, then unload the encoder) cannot work, or None."""
        return None

    def batch_size_refusal(self) -> str | None:
        """Why ai-toolkit cannot train this family with ``train.batch_size`` above 1, or None when it can."""
        return None

    def negative_prompt_arguments(self, pipe: Any, negative_prompt: str | None) -> dict[str, Any]:
        """The pipeline call arguments that carry ``negative_prompt`` (used when guidance is above 1)."""
        return {"negative_prompt": negative_prompt}

    def lora_refusal(self, keys: list[str]) -> str | None:
        """Why a LoRA file with these stored tensor names would load wrongly into the family's pipeline, or None."""
        return None

    def wrap_prompt(self, prompt: str) -> str:
        """``prompt`` inside the family's template, as the pipeline tokenizes it."""
        return self.prompt_template.format(prompt)

    def text_encoder(self, pipe: Any) -> nn.Module:
        """The text encoder of a diffusers pipeline of this family."""
        return pipe.text_encoder

    def tokenizer(self, pipe: Any) -> Any:
        """The tokenizer of a diffusers pipeline of this family."""
        return pipe.tokenizer

    def tokenizers(self, pipe: Any) -> list[Any]:
        """Every tokenizer object the pipeline encodes prompts with, ``tokenizer(pipe)`` first.

        A placeholder must be registered on each of them (on all or on none),
        or a prompt would reach the encoder without its id.
        """
        return [self.tokenizer(pipe)]

    def accepts(self, pipe: Any) -> bool:
        """Whether ``pipe`` (a diffusers pipeline object) belongs to this family."""
        return type(pipe).__name__ in self.pipeline_classes

    def pipeline_type(self) -> type:
        """The diffusers class named by ``pipeline_class`` (imported on first use)."""
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def aitk_tokenizer_source(self, model: Mapping[str, Any]) -> tuple[str, str]:
        """Where ai-toolkit loads the tokenizer from for a ``model:`` block: ``(path or hub repo, subfolder)``."""
        raise NotImplementedError

    def decoder(self, text_encoder: nn.Module) -> nn.Module:
        """The encoder's decoder stack (``config``, ``embed_tokens``, ``layers``)."""
        raise NotImplementedError

    def hidden_states(
        self,
        text_encoder: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        start: int,
        past: Any,
    ) -> torch.Tensor:
        """The encoder's output hidden states (as the pipeline uses them) for ``input_ids`` at positions ``start``...

        ``past`` holds the keys and values of positions ``0..start-1`` (or is
        ``None`` when ``start`` is 0); the input embedding runs, so the
        placeholder splice runs too.
        """
        raise NotImplementedError
