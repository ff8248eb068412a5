"""The physical floor: the extra FLOPs of a zero-prior training step over the baseline's, from the architectures.

Counted as multiply-accumulates of the matrix products (projections, MLPs,
attention scores and weighted sums; norms, rotary embeddings and the rank-16
LoRA are left out: each is below 1% of a block). A training step of the
baseline (ai-toolkit with cached text embeddings, gradient checkpointing on)
is the transformer's forward, its recomputation and its activation backward
(a frozen weight's backward is one product, the input gradient; attention's
is two per forward product). Zero-prior adds, with the prefix cache, the text
encoder's forward from the first placeholder on and its activation backward
(the prefix's keys and values come from the cache, the encoder's weights get
no gradient), plus the transformer's gradient into its text input; without
the cache, the whole template and prompt run forward and backward every step,
with the unused ``lm_head`` the pipeline's encoder call computes (over its
padding too, where the pipeline pads: Z-Image and FLUX.2 [klein] to 512
positions; FLUX.2 [klein] also hands the padding to the transformer, and its
prompt reads layer 27 of 36, so the backward, and a cached forward, stop
there while the pipeline's call runs every layer). After the
pivot the step is the baseline's. Prompts hold ``PROMPT_TOKENS`` tokens with the
placeholder ``PLACEHOLDER_AT`` tokens in (ai-toolkit puts the trigger first).

    python benchmarks/flops.py        # the table for every family at 512 and 1024 px
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PROMPT_TOKENS = 100  # a long caption
PLACEHOLDER_AT = 3  # "a photo of <zwx>, ..."


@dataclass(frozen=True)
class Encoder:
    """A decoder-only LLM text encoder (Qwen2.5-VL's text model, Qwen3)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int  # lm_head rows (the pipeline's encoder call computes logits for every position)

    def per_token(self) -> int:
        """Projection and MLP MACs of one position through every layer."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    def attention(self, start: int, end: int) -> int:
        """Score and weighted-sum MACs of positions ``start..end-1``, each over itself and all before it (causal)."""
        attended = (end * (end + 1) - start * (start + 1)) // 2
        return self.layers * 2 * attended * self.heads * self.head_dim

    def forward(self, start: int, end: int) -> int:
        return (end - start) * self.per_token() + self.attention(start, end)

    def backward(self, start: int, end: int) -> int:
        """Activation gradients only: one product per projection, two per attention product."""
        return (end - start) * self.per_token() + 2 * self.attention(start, end)


@dataclass(frozen=True)
class Transformer:
    """A diffusion transformer: ``dual`` (Qwen-Image's MMDiT) or ``single`` stream (Z-Image's S3-DiT).

    FLUX.2's double- and single-stream blocks do the same products per token (q, k, v, output and a gated
    3-matrix MLP; a single block fuses them into two linears) over the same joint sequence, so its blocks
    count as ``dual`` ones.
    """

    kind: str
    blocks: int
    dim: int
    mlp: int  # hidden width of the MLP
    mlp_matrices: int  # 2 (GELU) or 3 (SwiGLU)
    text_in: int  # the encoder's hidden size, projected to ``dim``
    refiners: int = 0  # single stream: layers over the image tokens alone and over the text tokens alone

    def _linear(self, tokens: int) -> int:
        return tokens * (4 * self.dim * self.dim + self.mlp_matrices * self.dim * self.mlp)

    def forward_parts(self, image: int, text: int) -> tuple[int, int]:
        """(projection and MLP MACs, attention MACs) of one forward."""
        joint = image + text
        linear = self.blocks * self._linear(joint) + text * self.text_in * self.dim
        attention = self.blocks * 2 * joint * joint * self.dim
        if self.refiners:
            linear += self.refiners * (self._linear(image) + self._linear(text))
            attention += self.refiners * 2 * (image * image + text * text) * self.dim
        return linear, attention

    def step(self, image: int, text: int) -> int:
        """Forward, its recomputation (gradient checkpointing) and the activation backward."""
        linear, attention = self.forward_parts(image, text)
        return 2 * (linear + attention) + linear + 2 * attention


@dataclass(frozen=True)
class Vision:
    """Qwen2.5-VL's vision tower on one control image (runs without gradient: it precedes the placeholder)."""

    layers: int = 32
    hidden: int = 1280
    intermediate: int = 3420
    full_layers: int = 4  # the rest attend within 8x8-patch windows
    window: int = 64

    def forward(self, patches: int) -> int:
        linear = self.layers * patches * (4 * self.hidden * self.hidden + 3 * self.hidden * self.intermediate)
        windowed = (self.layers - self.full_layers) * 2 * patches * self.window * self.hidden
        full = self.full_layers * 2 * patches * patches * self.hidden
        return linear + windowed + full


@dataclass(frozen=True)
class Family:
    """What one training step of a family runs: its two models and its token counts."""

    name: str
    encoder: Encoder
    transformer: Transformer
    template_prefix: int  # template positions before the user's prompt
    template_suffix: int  # template positions after it
    drop: int  # leading positions the pipeline drops (the rest reach the transformer)
    vision_tokens: int = 0  # merged control-image tokens inside the prefix (edit models)
    control_image_tokens: int = 0  # the control image's latent tokens next to the target's (edit models)
    prefix_cache: bool = True
    padded_to: int = 0  # positions the pipeline's encoder call pads every prompt to (Z-Image: 512)
    padding_kept: bool = False  # the padded positions reach the transformer too (FLUX.2 [klein]: no mask)
    read_layers: int = 0  # encoder layers up to the deepest one the prompt reads (0: every layer)

    def tokens(self) -> tuple[int, int, int]:
        """(first placeholder position, encoder positions, text tokens reaching the transformer)."""
        before = self.template_prefix + self.vision_tokens
        total = before + PROMPT_TOKENS + self.template_suffix
        if self.padding_kept:
            total = max(total, self.padded_to)
        return before + PLACEHOLDER_AT, total, total - self.drop

    def read_encoder(self) -> Encoder:
        """The encoder up to the deepest layer the prompt reads: the gradient starts there."""
        return replace(self.encoder, layers=self.read_layers) if self.read_layers else self.encoder

    def baseline(self, image: int) -> int:
        _, _, text = self.tokens()
        return self.transformer.step(image + self.control_image_tokens, text)

    def extra(self, image: int, cached: bool) -> int:
        """The zero-prior step's MACs beyond the baseline's, with (``cached``) or without the prefix cache."""
        first, total, text = self.tokens()
        into_text = text * self.transformer.text_in * self.transformer.dim
        read = self.read_encoder()
        if cached:  # the prefix's keys/values come from the cache (a varying prefix: recomputed, no gradient)
            varying = 0
            if self.vision_tokens:
                varying = Vision().forward(4 * self.vision_tokens) + read.forward(0, first)
            return varying + read.forward(first, total) + read.backward(first, total) + into_text
        vision = Vision().forward(4 * self.vision_tokens) if self.vision_tokens else 0
        run = max(total, self.padded_to)  # padding positions run through every layer too
        logits = run * self.encoder.hidden * self.encoder.vocab
        return vision + self.encoder.forward(0, run) + logits + read.backward(0, run) + into_text

    def floor(self, resolution: int, cached: bool = True) -> float:
        """The zero-prior step's MACs over the baseline's at ``resolution`` px (8x VAE, 2x2 patches)."""
        image = (resolution // 16) ** 2
        return 1 + self.extra(image, cached) / self.baseline(image)

    def encoder_share(self, resolution: int) -> float:
        """Encoder forward over the whole prompt, as a fraction of one transformer forward (the proxy's check)."""
        _, total, text = self.tokens()
        image = (resolution // 16) ** 2 + self.control_image_tokens
        return self.encoder.forward(0, total) / sum(self.transformer.forward_parts(image, text))


QWEN_ENCODER = Encoder(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, head_dim=128, vocab=152064)
QWEN_TRANSFORMER = Transformer("dual", blocks=60, dim=3072, mlp=4 * 3072, mlp_matrices=2, text_in=3584)
# Qwen3-4B; Z-Image reads the second-to-last layer's states, but the pipeline's call runs every layer and lm_head.
QWEN3_4B = Encoder(layers=36, hidden=2560, intermediate=9728, heads=32, kv_heads=8, head_dim=128, vocab=151936)
Z_IMAGE_TRANSFORMER = Transformer("single", blocks=30, dim=3840, mlp=10240, mlp_matrices=3, text_in=2560, refiners=2)
# ai-toolkit's Klein4BParams: 5 double + 20 single blocks at width 3072, MLP ratio 3; its text input is the hidden
# states of Qwen3-4B's layers 9, 18 and 27 side by side (3 x 2560 = 7680).
FLUX2_KLEIN_4B_TRANSFORMER = Transformer("dual", blocks=5 + 20, dim=3072, mlp=3 * 3072, mlp_matrices=3, text_in=7680)

FAMILIES = {
    # "<|im_start|>system\n...<|im_end|>\n<|im_start|>user\n" = 34, "<|im_end|>\n<|im_start|>assistant\n" = 5.
    "qwen_image": Family("qwen_image", QWEN_ENCODER, QWEN_TRANSFORMER, template_prefix=34, template_suffix=5, drop=34),
    # 72 template positions before the prompt (64 dropped, then "Picture 1: <|vision_start|><|image_pad|>
    # <|vision_end|>"), the one pad becoming the 384x384-area condition image's 196 merged tokens (4 patches each);
    # ai-toolkit's control latents at 1024x1024 area (4096 tokens) next to the target's.
    "qwen_image_edit_plus": Family("qwen_image_edit_plus", QWEN_ENCODER, QWEN_TRANSFORMER, template_prefix=71,
                                   template_suffix=5, drop=64, vision_tokens=196, control_image_tokens=4096,
                                   prefix_cache=False),
    # "<|im_start|>user\n" = 3, "<|im_end|>\n<|im_start|>assistant\n" = 5, nothing dropped.
    # ZImagePipeline pads every prompt to 512 positions (max_sequence_length) before its encoder call.
    "zimage": Family("zimage", QWEN3_4B, Z_IMAGE_TRANSFORMER, template_prefix=3, template_suffix=5, drop=0,
                     prefix_cache=False, padded_to=512),
    # "<|im_start|>user\n" = 3, "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n" = 9, nothing
    # dropped. Flux2KleinPipeline pads to 512 positions and passes all of them (no mask) to the transformer; the
    # prompt reads layer 27, but its encoder call runs all 36 layers and lm_head.
    "flux2_klein": Family("flux2_klein", QWEN3_4B, FLUX2_KLEIN_4B_TRANSFORMER, template_prefix=3, template_suffix=9,
                          drop=0, prefix_cache=False, padded_to=512, padding_kept=True, read_layers=27),
}


def main() -> None:
    print(f"physical floor: zero-prior step MACs / baseline step MACs ({PROMPT_TOKENS}-token prompt, placeholder "
          f"at token {PLACEHOLDER_AT}; ratio with the prefix cache / without it)")
    for family in FAMILIES.values():
        cells = [f"{res} px {family.floor(res):.4f} / {family.floor(res, cached=False):.4f}" for res in (512, 1024)]
        note = "" if family.prefix_cache else "  (prefix cache refused for this family: the second figure applies)"
        print(f"  {family.name:22s} " + "   ".join(cells) + note)


if __name__ == "__main__":
    main()
