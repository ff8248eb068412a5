"""The tiny Qwen3 text encoder that Z-Image and FLUX.2 [klein] share: the real vocabulary rows, small widths.

Both families load ``Qwen3ForCausalLM`` with Qwen3-4B's 151936-row tied
embedding (the tokenizer uses 151669 of them, so a new token lands on a spare
row) and ``rms_norm_eps`` 1e-6; only width, depth and heads differ.
"""

from __future__ import annotations

from typing import Any

VOCAB_ROWS = 151936  # Qwen3-4B's embedding height; the tokenizer uses 151669 of them


def tiny_qwen3_config(hidden: int, layers: int, heads: int, kv_heads: int) -> Any:
    """A ``Qwen3Config`` at ``hidden`` width (heads of 16) over the real vocabulary rows."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=VOCAB_ROWS,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=16,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        dtype="float32",
    )
