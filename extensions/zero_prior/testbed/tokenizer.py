"""The real Qwen2.5-VL tokenizer, rebuilt offline from the BPE ranks on PyPI.

Placeholder-token behaviour depends on exact ids: a new token must land on id
151665 (a row the 152064-row embedding already has) and the pipeline's prompt
template must be exactly 34 tokens long before the user text. A toy vocabulary
would hide both facts, and the hub is out of reach in tests, so the test bed
converts the 151643 BPE ranks that the ``dashscope`` wheel ships
(``dashscope/resources/qwen.tiktoken``) into a byte-level BPE vocabulary and
merge list, adds the 22 Qwen2.5-VL added tokens and writes a folder that
``Qwen2Tokenizer.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load.
The conversion follows transformers' ``TikTokenConverter``: every split of a
token into two known tokens becomes a merge, ranked by the merged token's rank,
which reproduces tiktoken's "merge the lowest-ranked adjacent pair" exactly.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TinyModelError
from ..fileio import sha256_file
from ._cache import cache_root, cached_build, folder_digests

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer

TIKTOKEN_ENV = "ZERO_PRIOR_QWEN_TIKTOKEN"
CACHE_DIRNAME = "qwen2_5_vl_tokenizer"
# Bump when the files written below change, so old caches are rebuilt.
BUILD_VERSION = "1"

NUM_RANKS = 151643
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5-VL's added tokens in id order from 151643, with their ``special`` flag.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
TOKENIZER_LENGTH = NUM_RANKS + len(ADDED_TOKENS)  # 151665
# Qwen3 (Z-Image's and FLUX.2 [klein]'s text encoders) keeps those ids and adds four plain entries after them.
QWEN3_ADDED_TOKENS = ADDED_TOKENS + (
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN3_TOKENIZER_LENGTH = NUM_RANKS + len(QWEN3_ADDED_TOKENS)  # 151669
QWEN3_CACHE_DIRNAME = "qwen3_tokenizer"
# A chat template written for the test bed that renders what Qwen3's own template renders for the calls the
# pipelines make (one user message, a generation prompt, thinking on or off); it is not Qwen's template.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)

_INSTALL_HINT = (
    "pip install dashscope (or pip install 'zero-prior[test]'), "
    f"or set {TIKTOKEN_ENV} to the path of a qwen.tiktoken file"
)


def find_qwen_tiktoken() -> Path:
    """Locate ``qwen.tiktoken`` without importing dashscope (0.5 s and its HTTP/websocket clients).

    ``$ZERO_PRIOR_QWEN_TIKTOKEN`` wins when set; otherwise the file is looked
    up inside the installed ``dashscope`` package.

    Example::

        >>> find_qwen_tiktoken().name
        'qwen.tiktoken'
    """
    override = os.environ.get(TIKTOKEN_ENV)
    if override:
        path = Path(override).expanduser()
        if path.is_file():
            return path
        raise TinyModelError(f"{TIKTOKEN_ENV}={override!r} is not a file. To fix: {_INSTALL_HINT}.")
    spec = find_spec("dashscope")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "resources" / "qwen.tiktoken"
        if path.is_file():
            return path
    raise TinyModelError(
        "The Qwen2.5-VL BPE ranks (dashscope/resources/qwen.tiktoken) were not found, "
        f"so the real tokenizer cannot be built. To fix: {_INSTALL_HINT}."
    )


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse ``base64token rank`` lines and check they are Qwen's 151643 contiguous ranks."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_RANKS or set(ranks.values()) != set(range(NUM_RANKS)):
        raise TinyModelError(
            f"{path} holds {len(ranks)} ranks, not Qwen's {NUM_RANKS} contiguous ranks 0..{NUM_RANKS - 1}. "
            f"To fix: {_INSTALL_HINT}."
        )
    return ranks


def _byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table (byte-level BPE stores tokens in it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, int] = {byte: byte for byte in printable}
    shifted = (byte for byte in range(256) if byte not in table)
    for offset, byte in enumerate(shifted):
        table[byte] = 256 + offset
    return [chr(table[byte]) for byte in range(256)]


def ranks_to_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Turn tiktoken ranks into a byte-level vocabulary and an ordered merge list.

    A merge ``(left, right)`` is listed for every way a token splits into two
    known tokens, ordered by the merged token's rank and then by the parts'
    ranks; a BPE applying merges in that order picks the same pair tiktoken does.
    """
    alphabet = _byte_alphabet()

    def to_text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    candidates: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            if left_rank is not None and right_rank is not None:
                candidates.append((rank, left_rank, right_rank, left, right))
    candidates.sort()
    vocab = {to_text(token): rank for token, rank in sorted(ranks.items(), key=lambda item: item[1])}
    merges = [(to_text(left), to_text(right)) for *_, left, right in candidates]
    return vocab, merges


def _tokenizer_config(added_tokens: tuple[tuple[str, bool], ...] = ADDED_TOKENS) -> dict:
    """``tokenizer_config.json`` mirroring Qwen-Image's: eos and pad ``<|endoftext|>``, no bos."""
    added = {
        str(NUM_RANKS + index): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for index, (content, special) in enumerate(added_tokens)
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [content for content, special in added_tokens[1:] if special],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_tokenizer_folder(folder: Path, ranks_path: Path) -> None:
    """Write vocab.json, merges.txt and tokenizer_config.json, then check that they load.

    No tokenizer.json: ``Qwen2Tokenizer`` rebuilds the same NFC + regex + byte-level
    pipeline from vocab and merges itself, and loads three times faster that way.
    """
    from transformers import Qwen2Tokenizer

    vocab, merges = ranks_to_vocab_and_merges(read_ranks(ranks_path))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = "".join(f"{left} {right}\n" for left, right in merges)
    (folder / "merges.txt").write_text("#version: 0.2\n" + merge_lines, encoding="utf-8")
    config = json.dumps(_tokenizer_config(), indent=2, ensure_ascii=False)
    (folder / "tokenizer_config.json").write_text(config + "\n", encoding="utf-8")

    loaded = len(Qwen2Tokenizer.from_pretrained(folder))
    if loaded != TOKENIZER_LENGTH:
        raise TinyModelError(f"built tokenizer in {folder} has {loaded} tokens, expected {TOKENIZER_LENGTH}")


def qwen_tokenizer_dir() -> Path:
    """Build (once) and return the folder of the real Qwen2.5-VL tokenizer.

    The folder lives in ``$ZERO_PRIOR_CACHE/qwen2_5_vl_tokenizer`` (default
    ``~/.cache/zero_prior``) and is rebuilt when its manifest no longer matches
    the ranks file or the files in it.

    Example::

        >>> from transformers import Qwen2Tokenizer
        >>> len(Qwen2Tokenizer.from_pretrained(qwen_tokenizer_dir()))
        151665
    """
    ranks_path = find_qwen_tiktoken()
    inputs = {"qwen.tiktoken": sha256_file(ranks_path), "build_version": BUILD_VERSION}
    target = cache_root() / CACHE_DIRNAME
    return cached_build(target, inputs, lambda folder: write_tokenizer_folder(folder, ranks_path))


def load_qwen_tokenizer() -> Qwen2Tokenizer:
    """A fresh ``Qwen2Tokenizer`` loaded from the cached folder (safe to mutate).

    Example::

        >>> from transformers import AddedToken
        >>> tok = load_qwen_tokenizer()
        >>> tok.add_tokens(AddedToken("<zwx>", normalized=False, special=False))
        1
        >>> tok.convert_tokens_to_ids("<zwx>")
        151665
    """
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(qwen_tokenizer_dir())


def write_qwen3_tokenizer_folder(folder: Path, base: Path) -> None:
    """The Qwen3 tokenizer from the Qwen2.5-VL folder ``base``: same ranks, its added tokens, eos ``<|im_end|>``."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(base / name, folder / name)
    config = {**_tokenizer_config(QWEN3_ADDED_TOKENS), "eos_token": "<|im_end|>", "chat_template": QWEN3_CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    loaded = len(AutoTokenizer.from_pretrained(folder))
    if loaded != QWEN3_TOKENIZER_LENGTH:
        raise TinyModelError(f"built tokenizer in {folder} has {loaded} tokens, expected {QWEN3_TOKENIZER_LENGTH}")


def qwen3_tokenizer_dir() -> Path:
    """Build (once) and return the folder of the Qwen3 tokenizer (151669 entries, a new token gets 151669).

    >>> from transformers import AutoTokenizer
    >>> len(AutoTokenizer.from_pretrained(qwen3_tokenizer_dir()))
    151669
    """
    base = qwen_tokenizer_dir()
    inputs = {"qwen2.5": json.dumps(folder_digests(base), sort_keys=True), "build_version": BUILD_VERSION}
    target = cache_root() / QWEN3_CACHE_DIRNAME
    return cached_build(target, inputs, lambda folder: write_qwen3_tokenizer_folder(folder, base))
