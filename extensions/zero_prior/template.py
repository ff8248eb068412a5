"""Qwen-Image's prompt template, in one place.

diffusers' ``QwenImagePipeline`` wraps every prompt in a chat template with a
system prompt and drops the first 34 token positions of the text encoder's
output. A placeholder token is only safe if it stays one id *inside* that
template, so the token checks tokenize the full template, not the bare word.
"""

from __future__ import annotations

# Copied from diffusers' QwenImagePipeline (prompt_template_encode); checked
# against the installed pipeline by tests/test_tokens.py.
PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, "
    "texture, quantity, text, spatial relationships of the objects and "
    "background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# Number of leading template token positions the pipeline drops.
PROMPT_TEMPLATE_START_IDX = 34

# Places where a user writes a trigger word; each ``{t}`` is the placeholder.
# Covers start of prompt, punctuation before and after, brackets, quotes and
# the possessive, which are the contexts where BPE merges usually bite.
TOKEN_CONTEXTS: tuple[str, ...] = (
    "{t}",
    "{t} standing in a field",
    "a photo of {t}",
    "a photo of {t}.",
    "a photo of {t}, smiling",
    "{t}'s face",
    "({t})",
    "[{t}]",
    '"{t}"',
    "'{t}'",
    "a portrait of {t}! {t}?",
    "{t}:{t};{t}",
    "a-{t}-b",
)


def wrap_prompt(prompt: str) -> str:
    """Return ``prompt`` inside Qwen-Image's template, as the pipeline tokenizes it.

    >>> wrap_prompt("a dog").endswith("user\\na dog<|im_end|>\\n<|im_start|>assistant\\n")
    True
    """
    return PROMPT_TEMPLATE.format(prompt)
