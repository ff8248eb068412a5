"""The tiny test bed is only useful if it behaves like the real thing: check that it does.

Tokenizer facts are checked against an independent tiktoken-style BPE over the
raw ranks; the pipeline is checked by loading it the way diffusers and
ai-toolkit do and generating with it.
"""

from __future__ import annotations

import base64
import unicodedata
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import pytest
import regex
import torch
from PIL import Image

from zero_prior.cli import main as cli_main
from zero_prior.errors import ConfigError, TinyModelError
from zero_prior.testbed import (
    build_tiny_pipeline,
    make_subject_dataset,
    qwen_tokenizer_dir,
)
from zero_prior.testbed import tokenizer as tokenizer_module
from zero_prior.testbed._cache import cached_build, folder_digests

TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

SAMPLES = [
    "a photo of sks dog",
    "Hello, world!",
    "I'll be there; you're late, DON'T wait. We'd've",
    "1234567890 3.14159 -42 1e-6",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines",
    "naïve café — “quotes” ‘single’ …",
    "e\u0301 is composed by NFC, so is A\u030angstrom",
    "中文分词测试：一只戴着帽子的猫。",
    "日本語のテキストとカタカナ",
    "한국어 문장입니다",
    "Привет, мир! Ёжик",
    "مرحبا بالعالم",
    "emoji 🙂🐟🏳️‍🌈 👍🏽",
    "def f(x):\n    return x**2  # comment",
    "https://example.com/path?q=1&r=two#frag",
    "email@example.org, @handle #tag $5.00 100%",
    "<zwx> is not a token yet",
    "a <|im_start|> inside text <|im_end|>",
    '<tool_call>{"name": "f"}</tool_call>',
    "ALL CAPS SHOUTING AND MiXeD cAsE",
    "snake_case camelCase kebab-case PascalCase",
    "[trigger] in brackets, (parens), {braces}",
    "zero-width\u200bspace and nbsp\u00a0here",
    "\x01 control chars \x7f",
    "a" * 50,
    "ab" * 30 + " " + "-" * 40,
    "Ünïcödé ÀÉÎÕÜ ßẞ ﬁ ligature",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚𝟛",
    "mixed 中文 and English 123 together!",
    TEMPLATE.format("a striped fish"),
]


# ---------------------------------------------------------------- reference BPE


@lru_cache(maxsize=1)
def _ranks() -> dict[bytes, int]:
    """The raw ranks, parsed here independently of the module under test."""
    lines = tokenizer_module.find_qwen_tiktoken().read_bytes().splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}


def _bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's algorithm: a known piece is one token, else merge the lowest-ranked adjacent pair."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while True:
        pairs = [(ranks[a + b], i) for i, (a, b) in enumerate(pairwise(parts)) if a + b in ranks]
        if not pairs:
            return [ranks[part] for part in parts]
        _, i = min(pairs)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def reference_encode(text: str) -> list[int]:
    """Added tokens first (matched verbatim), then NFC + the Qwen2 regex + BPE on the rest."""
    added = {content: tokenizer_module.NUM_RANKS + i for i, (content, _) in enumerate(tokenizer_module.ADDED_TOKENS)}
    splitter = regex.compile("(" + "|".join(regex.escape(token) for token in added) + ")")
    pattern = regex.compile(tokenizer_module.PRETOKENIZE_REGEX)
    ids: list[int] = []
    for chunk in splitter.split(text):
        if chunk in added:
            ids.append(added[chunk])
            continue
        for piece in pattern.findall(unicodedata.normalize("NFC", chunk)):
            ids.extend(_bpe(piece.encode("utf-8"), _ranks()))
    return ids


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_has_real_length_and_added_tokens(qwen_tokenizer):
    assert len(qwen_tokenizer) == 151665
    assert type(qwen_tokenizer).__name__ == "Qwen2Tokenizer"
    assert qwen_tokenizer.eos_token == qwen_tokenizer.pad_token == "<|endoftext|>"
    assert qwen_tokenizer.model_max_length == 131072
    for offset, (content, special) in enumerate(tokenizer_module.ADDED_TOKENS):
        token_id = 151643 + offset
        assert qwen_tokenizer.convert_tokens_to_ids(content) == token_id
        assert qwen_tokenizer.added_tokens_decoder[token_id].special is special, content
    assert qwen_tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655  # Qwen2.5-VL's image_token_id


def test_new_token_lands_on_first_spare_id(qwen_tokenizer):
    from transformers import AddedToken

    assert qwen_tokenizer.add_tokens(AddedToken("<zwx>", normalized=False, special=False)) == 1
    assert qwen_tokenizer.convert_tokens_to_ids("<zwx>") == 151665
    ids = qwen_tokenizer("a photo of <zwx>, a fish")["input_ids"]
    assert ids.count(151665) == 1


def test_pipeline_template_prefix_is_34_tokens(qwen_tokenizer):
    prefix = qwen_tokenizer(TEMPLATE.split("{}")[0])["input_ids"]
    assert len(prefix) == 34
    for user_text in ["a cat", "Zebra-striped fish", "中文", " leading space"]:
        ids = qwen_tokenizer(TEMPLATE.format(user_text))["input_ids"]
        assert ids[:34] == prefix
        assert ids[34:-5] == qwen_tokenizer(user_text)["input_ids"]


def test_encodings_match_reference_bpe(qwen_tokenizer):
    # One test over all samples (not parametrized): the function-scoped fixture reloads per test.
    mismatched = [text for text in SAMPLES if qwen_tokenizer(text)["input_ids"] != reference_encode(text)]
    assert mismatched == []
    decoded = [qwen_tokenizer.decode(qwen_tokenizer(text)["input_ids"]) for text in SAMPLES]
    assert decoded == [unicodedata.normalize("NFC", text) for text in SAMPLES]


def test_tokenizer_pipeline_is_nfc_regex_bytelevel(qwen_tokenizer):
    import json

    backend = qwen_tokenizer.backend_tokenizer
    assert json.loads(backend.normalizer.__getstate__())["type"] == "NFC"
    split, byte_level = json.loads(backend.pre_tokenizer.__getstate__())["pretokenizers"]
    assert split["pattern"]["Regex"] == tokenizer_module.PRETOKENIZE_REGEX
    assert byte_level == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    assert json.loads(backend.decoder.__getstate__())["type"] == "ByteLevel"


def test_auto_tokenizer_loads_the_same_tokenizer(qwen_tokenizer):
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    assert type(auto) is type(qwen_tokenizer)
    assert auto(SAMPLES[2])["input_ids"] == qwen_tokenizer(SAMPLES[2])["input_ids"]


def test_missing_ranks_file_names_the_fixes(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "qwen.tiktoken"
    monkeypatch.setenv("ZERO_PRIOR_QWEN_TIKTOKEN", str(missing))
    with pytest.raises(TinyModelError) as by_env:
        qwen_tokenizer_dir()
    assert str(missing) in str(by_env.value)

    monkeypatch.delenv("ZERO_PRIOR_QWEN_TIKTOKEN")
    monkeypatch.setattr(tokenizer_module, "find_spec", lambda name: None)
    with pytest.raises(TinyModelError) as by_package:
        qwen_tokenizer_dir()
    for error in (by_env.value, by_package.value):
        message = str(error)
        assert "pip install dashscope" in message
        assert "pip install 'zero-prior[test]'" in message
        assert "ZERO_PRIOR_QWEN_TIKTOKEN" in message


def test_truncated_ranks_file_is_refused(monkeypatch, tmp_path):
    short = tmp_path / "qwen.tiktoken"
    short.write_text("IQ== 0\nIg== 1\n")
    monkeypatch.setenv("ZERO_PRIOR_QWEN_TIKTOKEN", str(short))
    with pytest.raises(TinyModelError, match="holds 2 ranks, not Qwen's 151643"):
        qwen_tokenizer_dir()


def test_cache_reuses_intact_folders_and_rebuilds_changed_ones(tmp_path):
    builds = []

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "data.txt").write_text("payload")

    target = tmp_path / "artefact"
    assert cached_build(target, {"source": "a"}, build) == target
    cached_build(target, {"source": "a"}, build)
    assert len(builds) == 1
    (target / "data.txt").write_text("tampered")
    cached_build(target, {"source": "a"}, build)
    cached_build(target, {"source": "b"}, build)
    assert len(builds) == 3
    assert (target / "data.txt").read_text() == "payload"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefact"]  # no staging folders left


# ---------------------------------------------------------------- tiny pipeline


@pytest.mark.slow  # builds the tiny pipeline twice: about 1.2 s
def test_tiny_pipeline_build_is_seeded(tiny_pipeline_dir, tmp_path):
    state = torch.get_rng_state()
    again = build_tiny_pipeline(tmp_path / "seed0", seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert folder_digests(again) == folder_digests(tiny_pipeline_dir)

    other = folder_digests(build_tiny_pipeline(tmp_path / "seed1", seed=1))
    weights = [name for name in other if name.endswith(".safetensors")]
    assert sorted(weights) == [
        "text_encoder/model.safetensors",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert all(other[name] != folder_digests(again)[name] for name in weights)


def test_build_refuses_bad_arguments(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ConfigError, match="is not empty"):
        build_tiny_pipeline(tmp_path)
    with pytest.raises(ConfigError, match="text_hidden_size=50 must be a positive multiple of 16"):
        build_tiny_pipeline(tmp_path / "new", text_hidden_size=50)


def test_diffusers_pipeline_generates_requested_size(tiny_pipeline_dir):
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.prompt_template_encode == TEMPLATE
    assert pipe.prompt_template_encode_start_idx == 34
    assert pipe.vae_scale_factor == 8
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.z_dim
    text = pipe.text_encoder
    assert text.config.text_config.vocab_size == 152064
    assert text.config.text_config.rms_norm_eps == 1e-6
    assert not torch.equal(text.get_input_embeddings().weight, text.lm_head.weight)  # untied

    image = pipe(
        "a photo of a striped fish",
        height=64,
        width=96,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert isinstance(image, Image.Image)
    assert image.size == (96, 64)


def test_loads_like_ai_toolkit_without_the_vision_tower(tiny_pipeline_dir):
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer.from_pretrained(tiny_pipeline_dir, subfolder="tokenizer")
    assert len(tokenizer) == 151665
    text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_pipeline_dir, subfolder="text_encoder")
    full = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_pipeline_dir, subfolder="scheduler"),
        vae=AutoencoderKLQwenImage.from_pretrained(tiny_pipeline_dir, subfolder="vae"),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=None,
    )
    with torch.no_grad():
        expected, _ = full.encode_prompt("a photo of [trigger]", device="cpu")
        text_encoder.model.visual = None  # what ai-toolkit's QwenImageModel.load_model does
        embeds, _ = full.encode_prompt("a photo of [trigger]", device="cpu")
    prompt_tokens = len(tokenizer(TEMPLATE.format("a photo of [trigger]"))["input_ids"]) - 34
    assert embeds.shape == (1, prompt_tokens, 64)
    assert torch.equal(embeds, expected)


def test_cli_writes_pipeline_and_subject(tmp_path, capsys):
    pipeline, subject = tmp_path / "pipe", tmp_path / "fish"
    args = ["tiny-model", "--out", str(pipeline), "--seed", "3", "--subject", str(subject), "--num-images", "2"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert str(pipeline) in printed and str(subject) in printed
    assert sorted(p.name for p in pipeline.iterdir()) == [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "transformer",
        "vae",
    ]
    assert sorted(p.name for p in subject.iterdir()) == ["000.png", "000.txt", "001.png", "001.txt"]

    assert cli_main(["tiny-model", "--out", str(pipeline)]) == 1
    assert "is not empty" in capsys.readouterr().err


# ---------------------------------------------------------------- subject data set


def test_subject_dataset_is_deterministic_and_varied(tmp_path):
    first = make_subject_dataset(tmp_path / "a", num_images=4, size=64, seed=7, caption="a photo of [trigger]")
    second = make_subject_dataset(tmp_path / "b", num_images=4, size=64, seed=7)
    other_seed = make_subject_dataset(tmp_path / "c", num_images=4, size=64, seed=8)

    assert [p.name for p in first] == ["000.png", "001.png", "002.png", "003.png"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(first, other_seed, strict=True))
    assert all(p.with_suffix(".txt").read_text() == "a photo of [trigger]" for p in first)
    images = [Image.open(p) for p in first]
    assert {(image.mode, image.size) for image in images} == {("RGB", (64, 64))}
    assert len({image.tobytes() for image in images}) == 4  # every pose differs


def test_subject_dataset_refuses_existing_images_unless_overwrite(tmp_path):
    make_subject_dataset(tmp_path, num_images=3, size=32)
    (tmp_path / "notes.md").write_text("kept")
    with pytest.raises(ConfigError, match=r"already contains 3 image\(s\).*overwrite=True"):
        make_subject_dataset(tmp_path, num_images=2, size=32)

    paths = make_subject_dataset(tmp_path, num_images=2, size=32, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000.png", "000.txt", "001.png", "001.txt", "notes.md"]
    assert [p.name for p in paths] == ["000.png", "001.png"]


def test_control_images_pair_with_the_subject_images_without_changing_them(tmp_path):
    plain = make_subject_dataset(tmp_path / "plain", num_images=3, size=32, seed=7)
    paired = make_subject_dataset(tmp_path / "paired", num_images=3, size=32, seed=7, control_dir=tmp_path / "control")
    assert [p.read_bytes() for p in paired] == [p.read_bytes() for p in plain]  # callers without controls unchanged
    controls = sorted((tmp_path / "control").iterdir())
    assert [p.name for p in controls] == [p.name for p in paired]  # ai-toolkit pairs them by file name
    assert all(c.read_bytes() != p.read_bytes() for c, p in zip(controls, paired, strict=True))
    again = make_subject_dataset(tmp_path / "again", num_images=3, size=32, seed=7, control_dir=tmp_path / "more")
    assert [p.read_bytes() for p in sorted((tmp_path / "more").iterdir())] == [p.read_bytes() for p in controls]
    assert [p.name for p in again] == [p.name for p in paired]


def test_a_control_folder_with_images_is_refused_before_anything_is_written(tmp_path, capsys):
    make_subject_dataset(tmp_path / "taken", num_images=1, size=32)
    with pytest.raises(ConfigError, match=r"taken already contains 1 image\(s\)"):
        make_subject_dataset(tmp_path / "fresh", num_images=2, size=32, control_dir=tmp_path / "taken")
    assert not (tmp_path / "fresh").exists()
    assert cli_main(["tiny-model", "--out", str(tmp_path / "pipe"), "--control", str(tmp_path / "c")]) == 1
    assert "--control needs --subject" in capsys.readouterr().err and not (tmp_path / "pipe").exists()


@pytest.mark.slow
def test_cli_writes_an_edit_plus_pipeline_with_its_processor_and_control_images(tmp_path, capsys):
    pipeline, subject, control = tmp_path / "pipe", tmp_path / "fish", tmp_path / "control"
    args = ["tiny-model", "--family", "qwen_image_edit_plus", "--out", str(pipeline), "--subject", str(subject),
            "--control", str(control), "--num-images", "2"]
    assert cli_main(args) == 0
    assert f"control images: 2 (same names) -> {control}" in capsys.readouterr().out
    assert sorted(p.name for p in pipeline.iterdir()) == [
        "model_index.json", "processor", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"]
    tokenizer_files = {p.name: p.read_bytes() for p in (pipeline / "tokenizer").iterdir()}
    processor_files = {p.name: p.read_bytes() for p in (pipeline / "processor").iterdir()}
    assert processor_files.keys() - tokenizer_files.keys() == {"processor_config.json"}
    assert all(processor_files[name] == data for name, data in tokenizer_files.items())  # the real tokenizer files
    assert sorted(p.name for p in control.iterdir()) == ["000.png", "001.png"]
    from diffusers import QwenImageEditPlusPipeline

    pipe = QwenImageEditPlusPipeline.from_pretrained(pipeline)
    assert pipe.processor.tokenizer is not pipe.tokenizer and len(pipe.processor.tokenizer) == 151665
    assert pipe.transformer.config.zero_cond_t  # Edit-2511's condition timestep
