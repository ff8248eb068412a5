"""The file contract and what reads and writes it: format, weights packages, the diffusers loader, exports.

- ``format``: the LoRA ``.safetensors`` whose metadata carries the placeholder record (never touches a model);
- ``package``: a ``weights.zip`` or exported folder around one such file, and its ``meta.json``;
- ``loader``: ``load_zero_prior`` applies a file to a diffusers pipeline, all checks before any change;
- ``export``: the file as a Cog ``weights.zip``, for ComfyUI, or in diffusers' own key format;
- ``merge``: several LoRA files merged exactly into one that keeps the (one) placeholder record.
"""
