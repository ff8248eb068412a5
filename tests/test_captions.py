"""Paired captions: same template per image in both modes, stable choice, statistics, refusals, CLI."""

import hashlib
import json
import os
from collections import Counter

import pytest
from PIL import Image

from zero_prior.cli import main
from zero_prior.experiment.captions import (
    BASELINE,
    EVAL_TEMPLATES,
    RARE_WORD,
    STATS_FILE,
    SUBJECT_PHRASES,
    TRAIN_TEMPLATES,
    ZERO_PRIOR,
    CaptionError,
    caption_ext,
    caption_path,
    choose,
    evaluation_prompts,
    plan_captions,
    write_captions,
)


def make_dataset(root, names):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    return root


@pytest.fixture
def dataset(tmp_path):
    root = make_dataset(tmp_path / "subject", [f"img_{i:03d}.png" for i in range(12)] + ["sub/extra.JPG", "b.webp"])
    # ai-toolkit skips these, so captions must not be written for them either.
    make_dataset(root, [".hidden.png", ".thumbs/t.png", "_controls/c.png"])
    (root / "notes.md").write_text("not an image")
    return root


def test_templates_are_many_distinct_and_held_out_from_evaluation():
    assert len(TRAIN_TEMPLATES) >= 10 and len(set(TRAIN_TEMPLATES)) == len(TRAIN_TEMPLATES)
    assert not set(TRAIN_TEMPLATES) & set(EVAL_TEMPLATES)
    assert all("{subject}" in t and "," not in t for t in TRAIN_TEMPLATES + EVAL_TEMPLATES)
    assert evaluation_prompts("<zwx>")[2] == "a watercolor painting of <zwx>"


def test_choice_is_sha256_of_salted_seed_and_name():
    digest = hashlib.sha256(b"zero-prior-captions/v1\x007\x00sub/extra.JPG").digest()
    expected = (int.from_bytes(digest[:8], "big") % 12, int.from_bytes(digest[8:16], "big") % 4)
    assert choose("sub/extra.JPG", 7, 4) == expected


def test_captions_are_pinned_across_machines_and_python_versions(dataset):
    # Literal values: any change to templates, hashing or phrase order shows up here.
    captions = {e.image: e.captions for e in plan_captions(dataset, seed=0).entries}
    assert captions["img_000.png"] == {BASELINE: "a portrait of a person", ZERO_PRIOR: "a portrait of <zwx>"}
    assert captions["img_001.png"] == {BASELINE: "a professional photo of "
                                                 "someone", ZERO_PRIOR: "a professional photo of <zwx>"}
    assert captions["img_005.png"] == {BASELINE: "a photo of an individual", ZERO_PRIOR: "a photo of <zwx>"}


def test_writes_both_modes_side_by_side_from_one_template(dataset):
    stats = write_captions(plan_captions(dataset, seed=3, subject_class="person", token="<zwx>"))
    images = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*")
                    if p.suffix.lower() in {".png", ".jpg", ".webp"})
    trained = [i for i in images if not i.startswith((".", "_controls/", ".thumbs/"))]
    assert stats["count"] == len(trained) == 14
    for name in trained:
        image = dataset / name
        baseline = caption_path(image, BASELINE).read_text()
        placeholder = caption_path(image, ZERO_PRIOR).read_text()
        template, _ = choose(name, 3, 4)
        assert placeholder == TRAIN_TEMPLATES[template].format(subject="<zwx>")
        assert baseline in {TRAIN_TEMPLATES[template].format(subject=p) for p in SUBJECT_PHRASES["person"]}
    # Nothing for files ai-toolkit ignores.
    assert not list(dataset.glob("_controls/*.txt")) and not list(dataset.glob(".thumbs/*.txt"))
    assert not (dataset / ".hidden.baseline.txt").exists()


def test_statistics_are_printed_and_saved_and_match_the_files(dataset):
    stats = write_captions(plan_captions(dataset, seed=1, subject_class="dog", rare_word="zwx"))
    assert json.loads((dataset / STATS_FILE).read_text()) == stats
    for mode in (BASELINE, ZERO_PRIOR, RARE_WORD):
        files = sorted(dataset.rglob(f"*.{caption_ext(mode)}"))
        assert len(files) == 14
        words = [len(f.read_text().split()) for f in files]
        assert stats["modes"][mode]["mean_words"] == pytest.approx(sum(words) / len(words))
        assert stats["modes"][mode]["caption_ext"] == f"{mode}.txt"
    counts = Counter(TRAIN_TEMPLATES[e["template"]] for e in stats["images"])
    for mode in (BASELINE, ZERO_PRIOR, RARE_WORD):
        assert stats["modes"][mode]["template_counts"] == {t: counts.get(t, 0) for t in TRAIN_TEMPLATES}
    assert all(e["captions"][RARE_WORD] == e["captions"][ZERO_PRIOR].replace("<zwx>", "zwx") for e in stats["images"])
    assert stats["modes"][BASELINE]["subject"] == list(SUBJECT_PHRASES["dog"])


def test_caption_files_are_where_ai_toolkit_looks(tmp_path):
    # ai-toolkit: path_no_ext = os.path.splitext(img)[0]; prompt_path = path_no_ext + caption_ext,
    # where DatasetConfig prefixes a missing dot to caption_ext.
    image = tmp_path / "my.subject.01.jpeg"
    for mode in (BASELINE, ZERO_PRIOR):
        assert str(caption_path(image, mode)) == os.path.splitext(str(image))[0] + "." + caption_ext(mode)


def test_seed_changes_choices_but_not_pairing(dataset):
    first = plan_captions(dataset, seed=0).entries
    second = plan_captions(dataset, seed=1).entries
    assert [e.template for e in first] != [e.template for e in second]
    assert plan_captions(dataset, seed=0).entries == first


def test_refuses_existing_captions_before_writing_anything(dataset):
    existing = caption_path(dataset / "img_005.png", ZERO_PRIOR)
    existing.write_text("my own caption")
    with pytest.raises(CaptionError, match=r"1 caption file\(s\) already exist .*img_005.zero_prior.txt.*--overwrite"):
        write_captions(plan_captions(dataset))
    assert sorted(p.name for p in dataset.rglob("*.txt")) == ["img_005.zero_prior.txt"]
    assert existing.read_text() == "my own caption" and not (dataset / STATS_FILE).exists()
    write_captions(plan_captions(dataset), overwrite=True)
    assert existing.read_text() == "a photo of <zwx>"


def test_refuses_empty_dataset_unknown_class_and_bad_token(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CaptionError, match=r"no images \(.png, .jpg, .jpeg, .webp\) found"):
        plan_captions(tmp_path)
    make_dataset(tmp_path, ["a.png"])
    with pytest.raises(CaptionError, match=r"--subject-class 'robot' is unknown.*--subject-phrase"):
        plan_captions(tmp_path, subject_class="robot")
    with pytest.raises(CaptionError, match=r"--token 'two words': must be one non-empty word"):
        plan_captions(tmp_path, token="two words")
    custom = plan_captions(tmp_path, subject_class="robot", subject_phrases=["a toy robot"])
    [entry] = custom.entries
    assert entry.captions[BASELINE] == entry.captions[ZERO_PRIOR].replace("<zwx>", "a toy robot")


def test_refuses_two_images_sharing_a_caption_file(tmp_path):
    make_dataset(tmp_path, ["a.png", "a.jpg"])
    with pytest.raises(CaptionError, match=r"a.jpg, a.png would share one caption file"):
        plan_captions(tmp_path)


def test_cli_prints_statistics_and_refuses_a_rerun(dataset, capsys):
    assert main(["captions", str(dataset), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "14 images in" in out and "'zero_prior.txt'" in out and "'baseline.txt'" in out
    assert "a portrait of {subject}" in out and str(dataset / STATS_FILE) in out
    assert main(["captions", str(dataset)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("zero-prior captions: error: 29 caption file(s) already "
                          "exist") and err.endswith("--overwrite to replace them")
    assert main(["captions", str(dataset), "--overwrite"]) == 0
