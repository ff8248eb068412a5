"""Metrics on synthetic images and tiny random CLIP / DINOv2 models loaded by path, like real ones."""

import numpy as np
import pytest
import torch
from PIL import Image

from zero_prior.errors import MetricInputError, MetricUnavailableError
from zero_prior.experiment.metrics.diversity import LpipsScorer, backbone_checkpoint
from zero_prior.experiment.metrics.image_stats import brightness, image_stats, luminance, rms_contrast, sharpness
from zero_prior.experiment.metrics.similarity import ClipScorer, DinoScorer


def noise_image(seed, size=(64, 64)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_image_stats_on_known_arrays():
    checkerboard = (np.indices((8, 10)).sum(axis=0) % 2).astype(np.float64)
    # Laplacian of a 0/1 checkerboard is 4 - 8 * v = +-4 everywhere inside: variance 16.
    assert image_stats(checkerboard) == {"brightness": 0.5, "rms_contrast": 0.5, "sharpness": 16.0}
    flat = np.full((5, 5, 3), 0.3)
    assert brightness(flat) == pytest.approx(0.3, abs=1e-15) and rms_contrast(flat) == 0.0 and sharpness(flat) == 0.0
    # A linear ramp has zero second derivative: sharp edges only, no Laplacian energy.
    assert sharpness(np.tile(np.linspace(0, 1, 9), (9, 1))) == pytest.approx(0.0, abs=1e-24)


def test_luma_weights_and_input_types_agree(tmp_path):
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert brightness(red) == pytest.approx(0.299)
    rgba = np.concatenate([red, np.zeros((4, 4, 1), dtype=np.uint8)], axis=2)
    assert brightness(rgba) == pytest.approx(0.299)
    image = noise_image(3, (16, 12))
    image.save(tmp_path / "noise.png")
    from_array = luminance(np.asarray(image))
    assert np.array_equal(luminance(image), from_array)
    assert np.array_equal(luminance(tmp_path / "noise.png"), from_array)
    assert from_array.shape == (12, 16)


def test_sharpness_is_opencv_laplacian_variance_on_interior_pixels():
    cv2 = pytest.importorskip("cv2", reason="OpenCV is only the cross-check, not a dependency")
    gray = np.random.default_rng(0).integers(0, 256, size=(20, 30)).astype(np.uint8)
    laplacian = cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F)[1:-1, 1:-1]
    assert sharpness(gray) == pytest.approx(laplacian.var() / 255**2, rel=1e-12)


def test_image_stats_refuse_unusable_input():
    with pytest.raises(MetricInputError, match=r"float image values span \[0.0, 2.0\]; scale them to \[0, 1\]"):
        brightness(np.array([[0.0, 2.0]]))
    with pytest.raises(MetricInputError, match="image dtype int64 is not supported"):
        brightness(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(MetricInputError, match=r"image of 2x5 pixels is too small for a Laplacian \(min 3x3\)"):
        sharpness(np.zeros((5, 2)))


def test_clip_image_against_itself_is_one_and_clip_t_is_the_model_cosine(tiny_clip_dir):
    clip = ClipScorer.load(tiny_clip_dir, device="cpu")
    a, b = noise_image(0), noise_image(1)
    assert clip.clip_i([a], [a]) == [pytest.approx(1.0, abs=1e-5)]
    assert clip.clip_i([a], [b])[0] < 0.9999
    [self_and_other] = clip.clip_i([a], [a, b])
    assert self_and_other == pytest.approx((1.0 + clip.clip_i([a], [b])[0]) / 2, abs=1e-5)

    prompts = ["a photo of <zwx> on a beach", "a pencil sketch of a person"]
    scores = clip.clip_t([a, b], prompts)
    # Independent check: CLIPModel.forward's logits are the cosine times exp(logit_scale).
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny_clip_dir), CLIPProcessor.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        out = model(**processor(text=prompts, images=[a, b], return_tensors="pt", padding=True))
    expected = (out.logits_per_image.diagonal() / model.logit_scale.exp()).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)


def test_dino_image_against_itself_is_one(tiny_dino_dir):
    dino = DinoScorer.load(tiny_dino_dir, device="cpu", batch_size=1)
    a, b = noise_image(0), noise_image(1)
    same, other = dino.similarity([a, b], [a])
    assert same == pytest.approx(1.0, abs=1e-5) and other < 0.9999
    assert dino.embeddings([a, b]).shape == (2, 32)


def test_unloadable_model_is_reported_unavailable(tmp_path):
    with pytest.raises(MetricUnavailableError, match=rf"CLIP model '{tmp_path}' could not be loaded .*config.json"):
        ClipScorer.load(tmp_path)
    with pytest.raises(MetricUnavailableError, match=rf"DINO model '{tmp_path}' could not be loaded"):
        DinoScorer.load(tmp_path)


def test_lpips_identical_images_or_reported_missing():
    """The real published LPIPS: 0 for identical images, or missing with the reason (no backbone here)."""
    try:
        scorer = LpipsScorer.load("alex", device="cpu")
    except MetricUnavailableError as error:
        checkpoint = backbone_checkpoint("alex")
        assert not checkpoint.is_file()
        assert str(checkpoint) in str(error) and "torchvision.models.alexnet(weights='IMAGENET1K_V1')" in str(error)
    else:
        image = noise_image(0)
        assert scorer.diversity([image, image]) == 0.0


def test_lpips_missing_backbone_names_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoint = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert backbone_checkpoint("alex") == checkpoint
    with pytest.raises(MetricUnavailableError) as caught:
        LpipsScorer.load("alex", device="cpu")
    assert str(caught.value) == (
        f"LPIPS needs torchvision's ImageNet 'alex' backbone weights, not found at {checkpoint} "
        "(the lpips package ships only its linear layers); run `python -c \"import torchvision; "
        f"torchvision.models.alexnet(weights='IMAGENET1K_V1')\"` once with internet, or copy "
        f"alexnet-owt-7be5be79.pth into {checkpoint.parent}"
    )


@pytest.mark.slow  # builds an LPIPS backbone: about 1.5 s
def test_lpips_load_reads_a_cached_backbone_without_network(tmp_path, monkeypatch):
    """``load`` takes the backbone from torch's hub cache; a random stand-in file proves which file it read."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    stand_in = torchvision.models.alexnet().state_dict()
    backbone_checkpoint("alex").parent.mkdir(parents=True)
    torch.save(stand_in, backbone_checkpoint("alex"))
    scorer = LpipsScorer.load("alex", device="cpu")
    assert torch.equal(scorer.module.net.slice1[0].weight, stand_in["features.0.weight"])
    image = noise_image(0)
    assert scorer.diversity([image, image]) == 0.0 and scorer.diversity([image, noise_image(1)]) > 0


@pytest.mark.filterwarnings("ignore:.*deprecated since 0.13:UserWarning")  # lpips passes torchvision's old pretrained=
def test_pairwise_lpips_bookkeeping_with_the_lpips_module():
    """The pairing and averaging around the lpips module, on a random-trunk LPIPS built for this test only."""
    import lpips

    torch.manual_seed(0)
    scorer = LpipsScorer(lpips.LPIPS(net="alex", pnet_rand=True, verbose=False), "alex", "cpu", batch_size=2)
    a, b, c = noise_image(0), noise_image(1), noise_image(2)
    assert scorer.diversity([a, a, a]) == 0.0
    distances = scorer.pairwise_distances([a, b, c])
    with torch.no_grad():
        def to_tensor(image):
            return torch.from_numpy(np.asarray(image).astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

        ab = float(scorer.module(to_tensor(a), to_tensor(b)))
    assert len(distances) == 3 and distances[0] == pytest.approx(ab, rel=1e-5) and min(distances) > 0
    assert scorer.diversity([a, b, c]) == pytest.approx(sum(distances) / 3)
    with pytest.raises(MetricInputError, match="at least 2 images of one prompt, got 1"):
        scorer.diversity([a])
    with pytest.raises(MetricInputError, match=r"images of one size, got sizes \[\(32, 32\), \(64, 64\)\]"):
        scorer.diversity([a, noise_image(4, (32, 32))])


def test_metric_models_are_loaded_strictly_and_identified(tiny_clip_dir, tiny_dino_dir, tmp_path):
    """A CLIP without its text tower, or a CLIP folder given as DINO, is unavailable with the reason, not scored."""
    import shutil

    from safetensors.torch import load_file, save_file

    from zero_prior.experiment.metrics.identity import model_identity

    vision_only = tmp_path / "vision_only_clip"
    shutil.copytree(tiny_clip_dir, vision_only)
    weights = load_file(vision_only / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("text_model.")}, vision_only / "model.safetensors")
    expected = r"CLIP model .* does not match CLIPModel: \d+ missing weight\(s\) \(e.g. text_model\..*would be random"
    with pytest.raises(MetricUnavailableError, match=expected):
        ClipScorer.load(vision_only)
    with pytest.raises(MetricUnavailableError, match=r"DINO model .* is a 'clip' model; give a DINO ViT"):
        DinoScorer.load(tiny_clip_dir)
    identity = model_identity(str(tiny_dino_dir))
    assert identity["random"] is True and identity["revision"] is None
    from zero_prior.fileio import sha256_file

    assert identity["sha256"] == {"model.safetensors": sha256_file(tiny_dino_dir / "model.safetensors")}


def test_an_older_checkpoint_with_computed_buffers_loads_and_a_stray_weight_does_not(tiny_clip_dir, tmp_path):
    """CLIP checkpoints saved before transformers 5 hold ``position_ids``, which the model computes: not a defect."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    older = tmp_path / "older_clip"
    shutil.copytree(tiny_clip_dir, older)
    weights = load_file(older / "model.safetensors")
    weights["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    weights["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(weights, older / "model.safetensors", metadata={"format": "pt"})
    assert ClipScorer.load(older).name == str(older)
    weights["text_model.extra_head.weight"] = torch.zeros(2, 2)
    save_file(weights, older / "model.safetensors", metadata={"format": "pt"})
    stray = r"1 unexpected weight\(s\) \(e.g. text_model.extra_head.weight\)"
    with pytest.raises(MetricUnavailableError, match=stray):
        ClipScorer.load(older)

def test_tiny_metric_models_load_as_the_evaluation_loads_them(tmp_path, monkeypatch):
    """``zero-prior metric-models --tiny``: CLIP, DINOv2 and an LPIPS backbone, each labelled random."""
    from zero_prior.cli import main
    from zero_prior.experiment.metrics.identity import file_identity, model_identity

    assert main(["metric-models", "--tiny", "--out", str(tmp_path)]) == 0
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    image = noise_image(0)
    assert ClipScorer.load(tmp_path / "clip", device="cpu").clip_i([image], [image]) == [pytest.approx(1.0, abs=1e-5)]
    assert DinoScorer.load(tmp_path / "dino", device="cpu").similarity([image], [image]) == [pytest.approx(1.0, 1e-5)]
    assert LpipsScorer.load("squeeze", device="cpu").diversity([image, image]) == 0.0
    assert model_identity(str(tmp_path / "clip"))["random"] and model_identity(str(tmp_path / "dino"))["random"]
    assert file_identity("lpips squeeze", backbone_checkpoint("squeeze"))["random"]
