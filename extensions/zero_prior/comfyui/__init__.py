"""zero-prior inside ComfyUI: the custom node "Load zero-prior LoRA" and what it needs.

ComfyUI imports every package in ``custom_nodes/``; ``zero-prior install
--comfyui PATH`` links this whole package there as ``custom_nodes/zero_prior``
(the same folder ai-toolkit imports as an extension), and the package root
hands ComfyUI ``NODE_CLASS_MAPPINGS`` from ``nodes`` on first access. Only
``nodes`` and ``loading`` import ComfyUI; ``checkout`` (finding a checkout),
``install`` and ``tokenizer`` (the placeholder-aware tokenizer, pure
transformers) run without it.
"""
