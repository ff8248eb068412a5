"""Paired training captions: one template per image, two (or three) ways to name the subject.

The comparison "zero-prior token vs. semantic trigger word" is only fair if
the two arms see the same sentences except for the words that name the
subject. So every image gets one template, chosen by a stable hash (sha256)
of its path relative to the dataset and a seed, and each mode fills the same
template's subject slot differently:

- ``baseline``: a semantic phrase of the subject class ("a person", "someone", ...),
- ``zero_prior``: the placeholder token (``<zwx>``),
- ``rare_word`` (optional, for the ablation): a literal rare word (``zwx``) that is no new token.

The files sit next to the image, ``NAME.baseline.txt`` / ``NAME.zero_prior.txt``.
ai-toolkit finds a caption as ``splitext(image)[0] + caption_ext`` (a dot is
prepended when missing), so a dataset selects a mode with
``caption_ext: "baseline.txt"`` or ``caption_ext: "zero_prior.txt"``; the
images are never copied. Templates contain no commas because ai-toolkit
splits captions on commas and rejoins them.

``EVAL_TEMPLATES`` are held out: training captions never use them, so the
evaluation measures generalisation to new sentences, not recall of captions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..aitk.datasets import find_images
from ..aitk.facts import IMAGE_EXTENSIONS
from ..errors import CaptionError

BASELINE = "baseline"
ZERO_PRIOR = "zero_prior"
RARE_WORD = "rare_word"

# Written next to the captions so a user can check the pairing later.
STATS_FILE = "zero_prior_captions.json"

# Changing a template, its order, or this salt changes every caption: bump the salt's version then.
HASH_SALT = "zero-prior-captions/v1"

TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of {subject}",
    "a portrait of {subject}",
    "a close-up photo of {subject}",
    "a photo of {subject} in natural lighting",
    "a professional photo of {subject}",
    "a candid photo of {subject}",
    "a high-quality photo of {subject}",
    "a photo of {subject} in soft light",
    "a cropped photo of {subject}",
    "a clear photo of {subject}",
    "a detailed photo of {subject}",
    "a studio photo of {subject}",
)

# Never used for training; scenes and styles the training captions do not mention.
EVAL_TEMPLATES: tuple[str, ...] = (
    "a photo of {subject} on a beach at sunset",
    "a photo of {subject} in a snowy forest",
    "a watercolor painting of {subject}",
    "a pencil sketch of {subject}",
    "a photo of {subject} wearing a red hat",
    "a photo of {subject} reading a book in a cafe",
    "a photo of {subject} in front of a city skyline at night",
    "an oil painting of {subject} in a garden",
    # Further held-out prompts in the structure of DreamBench (25 per subject): new scenes,
    # accessories and outfits, and renderings; written for any subject class.
    "a photo of {subject} in the jungle",
    "a photo of {subject} on a cobblestone street",
    "a photo of {subject} with a mountain in the background",
    "a photo of {subject} with a blue house in the background",
    "a photo of {subject} in a wheat field",
    "a photo of {subject} with autumn leaves in the background",
    "a photo of {subject} with the Eiffel Tower in the background",
    "a photo of {subject} floating on water",
    "a photo of {subject} on a wooden floor",
    "a photo of {subject} on a purple rug in a forest",
    "a photo of {subject} in the desert at noon",
    "a photo of {subject} wearing a rainbow scarf",
    "a photo of {subject} wearing pink glasses",
    "a photo of {subject} in a chef outfit",
    "a cubist painting of {subject}",
    "a comic book drawing of {subject}",
    "a 3d render of {subject}",
)

# Semantic phrases per subject class; the first is the class phrase used for prior-leak prompts.
SUBJECT_PHRASES: dict[str, tuple[str, ...]] = {
    "person": ("a person", "the subject", "an individual", "someone"),
    "woman": ("a woman", "the woman", "the subject", "a lady"),
    "man": ("a man", "the man", "the subject", "a gentleman"),
    "dog": ("a dog", "the dog", "the subject", "a pet dog"),
    "cat": ("a cat", "the cat", "the subject", "a pet cat"),
    "object": ("an object", "the object", "the subject", "an item"),
}


def caption_ext(mode: str) -> str:
    """The ai-toolkit ``caption_ext`` value that selects ``mode``'s files.

    >>> caption_ext("zero_prior")
    'zero_prior.txt'
    """
    return f"{mode}.txt"


def caption_path(image: Path, mode: str) -> Path:
    """Where ai-toolkit looks for ``image``'s caption with ``caption_ext(mode)``."""
    return image.with_name(f"{image.stem}.{caption_ext(mode)}")


def choose(name: str, seed: int, subject_count: int) -> tuple[int, int]:
    """(template index, subject phrase index) for an image name, identical on every machine.

    ``name`` is the image path relative to the dataset in POSIX form, so the
    choice does not depend on where the dataset lives. sha256, not ``hash()``,
    which is salted per process.

    >>> choose("img_000.png", 0, 4)
    (1, 0)
    """
    digest = hashlib.sha256(f"{HASH_SALT}\0{seed}\0{name}".encode()).digest()
    template = int.from_bytes(digest[:8], "big") % len(TRAIN_TEMPLATES)
    phrase = int.from_bytes(digest[8:16], "big") % subject_count
    return template, phrase


def evaluation_prompts(subject: str) -> list[str]:
    """The held-out evaluation prompts with ``subject`` in the slot.

    Use the placeholder for the zero-prior arms, the class phrase
    (``SUBJECT_PHRASES[cls][0]``) for the baseline and for prior-leak prompts.

    >>> evaluation_prompts("<zwx>")[0]
    'a photo of <zwx> on a beach at sunset'
    """
    return [template.format(subject=subject) for template in EVAL_TEMPLATES]


@dataclass(frozen=True)
class CaptionEntry:
    """One image and its captions, one per mode, all from the same template."""

    image: str  # relative POSIX path inside the dataset
    template: int
    captions: dict[str, str]


@dataclass(frozen=True)
class CaptionPlan:
    """Every caption to write, computed before anything touches the disk."""

    dataset: Path
    seed: int
    subject_class: str
    subject_phrases: tuple[str, ...]
    fills: dict[str, str | None]  # mode -> literal subject text, None = semantic phrases
    entries: list[CaptionEntry]

    def targets(self) -> list[Path]:
        """Every file the plan writes: the captions and the statistics file."""
        paths = [caption_path(self.dataset / e.image, mode) for e in self.entries for mode in self.fills]
        return paths + [self.dataset / STATS_FILE]

    def stats(self) -> dict[str, Any]:
        """Count, mean words per caption and template distribution, per mode, plus every caption.

        Each mode's distribution is read back from its caption text, not from
        the shared index, so equal distributions confirm the pairing.
        """
        modes = {}
        for mode, fill in self.fills.items():
            subjects = self.subject_phrases if fill is None else (fill,)
            words = [len(e.captions[mode].split()) for e in self.entries]
            counts = Counter(_template_of(e.captions[mode], subjects) for e in self.entries)
            modes[mode] = {
                "caption_ext": caption_ext(mode),
                "subject": list(subjects) if fill is None else fill,
                "mean_words": sum(words) / len(words),
                "template_counts": {t: counts.get(t, 0) for t in TRAIN_TEMPLATES},
            }
        return {
            "version": HASH_SALT,
            "seed": self.seed,
            "subject_class": self.subject_class,
            "count": len(self.entries),
            "modes": modes,
            "eval_templates": list(EVAL_TEMPLATES),
            "images": [{"image": e.image, "template": e.template, "captions": e.captions} for e in self.entries],
        }


def plan_captions(
    dataset: str | os.PathLike[str],
    seed: int = 0,
    subject_class: str = "person",
    token: str = "<zwx>",
    rare_word: str | None = None,
    subject_phrases: Sequence[str] | None = None,
) -> CaptionPlan:
    """Compute every caption for ``dataset`` without writing anything.

    ``subject_phrases`` overrides the class's semantic phrases;
    ``rare_word`` adds the ``rare_word`` mode (the ablation arm).

    Example::

        plan = plan_captions("data/subject", seed=0)
        plan.entries[0].image  # -> 'img_000.png'
        plan.entries[0].captions  # -> {'baseline': 'a portrait of a person', 'zero_prior': 'a portrait of <zwx>'}
    """
    root = Path(dataset)
    if not root.is_dir():
        raise CaptionError(f"{root}: not a folder; pass the folder that holds the training images")
    if subject_phrases is None:
        if subject_class not in SUBJECT_PHRASES:
            raise CaptionError(
                f"--subject-class {subject_class!r} is unknown; choose one of {sorted(SUBJECT_PHRASES)} "
                "or give the phrases with --subject-phrase"
            )
        subject_phrases = SUBJECT_PHRASES[subject_class]
    phrases = tuple(subject_phrases)
    if not phrases or any(not p.strip() or "," in p for p in phrases):
        raise CaptionError(f"--subject-phrase {list(phrases)!r}: give at least one non-empty phrase without commas")
    fills: dict[str, str | None] = {BASELINE: None, ZERO_PRIOR: token}
    if rare_word is not None:
        fills[RARE_WORD] = rare_word
    for option, word in (("--token", token), ("--rare-word", rare_word)):
        if word is not None and (not word or any(c.isspace() or c == "," for c in word)):
            raise CaptionError(f"{option} {word!r}: must be one non-empty word without spaces or commas")

    images = find_images(root)
    if not images:
        raise CaptionError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found; check the dataset path")
    _refuse_shared_captions(root, images)

    entries = []
    for image in images:
        name = image.relative_to(root).as_posix()
        template, phrase = choose(name, seed, len(phrases))
        captions = {
            mode: TRAIN_TEMPLATES[template].format(subject=phrases[phrase] if fill is None else fill)
            for mode, fill in fills.items()
        }
        entries.append(CaptionEntry(name, template, captions))
    return CaptionPlan(root, seed, subject_class, phrases, fills, entries)


def write_captions(plan: CaptionPlan, overwrite: bool = False) -> dict[str, Any]:
    """Write every caption of ``plan`` and its statistics file; return the statistics.

    All targets are checked before the first write, so a refusal leaves the
    dataset untouched.

    Example::

        stats = write_captions(plan_captions("data/subject"))
        stats["modes"]["zero_prior"]["caption_ext"]  # -> 'zero_prior.txt'
    """
    existing = [p for p in plan.targets() if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (f" and {len(existing) - 3} "
                                                           "more" if len(existing) > 3 else "")
        raise CaptionError(f"{len(existing)} caption file(s) already exist ({shown}); pass --overwrite to replace "
                           "them")
    for entry in plan.entries:
        for mode, text in entry.captions.items():
            # No trailing newline: ai-toolkit feeds the file's text to the prompt unchanged.
            caption_path(plan.dataset / entry.image, mode).write_text(text, encoding="utf-8")
    stats = plan.stats()
    (plan.dataset / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stats


def _refuse_shared_captions(root: Path, images: list[Path]) -> None:
    """Stop when two images (a.png, a.jpg) would read the same caption file."""
    by_stem: dict[Path, list[Path]] = {}
    for image in images:
        by_stem.setdefault(image.with_suffix(""), []).append(image)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        shown = ", ".join(str(p.relative_to(root)) for p in clashes[0])
        raise CaptionError(f"{shown} would share one caption file; rename one of them ({len(clashes)} clash(es))")


def _template_of(caption: str, subjects: Sequence[str]) -> str:
    """The training template that, filled with one of ``subjects``, gives ``caption``."""
    for template in TRAIN_TEMPLATES:
        prefix, suffix = template.split("{subject}")
        middle = caption[len(prefix) : len(caption) - len(suffix)]
        if caption.startswith(prefix) and caption.endswith(suffix) and middle in subjects:
            return template
    raise CaptionError(f"caption {caption!r} matches no training template; this is a bug in zero_prior.captions")
