"""Hugging Face image classifiers as teachers (hf:DIR holding a ...ForImageClassification): a tiny ViT
built from a config and saved with save_pretrained in tmp_path, with a preprocessor_config.json. It reads
the images as given and preprocesses them as its folder says; a distill run's teacher row is what the
model itself scores on the raw test images.
Run: PYTHONPATH=src python -m pytest tests/models/test_hf_images.py -q
"""
import json

import pytest
import torch

from kdkit.config import DistillConfig, apply_overrides
from kdkit.errors import KdkitError
from kdkit.models import create_model
from kdkit.recipes import run_distill
from test_text_models import need_hf

MEAN, STD, SIZE = 0.5, 0.25, 16  # the folder's preprocessing: 8x8 digits are resized to 16x16


def vit_folder(folder, classes: int = 10, train=None):
    """A tiny ViT saved in `folder`; train (pixels, labels): first fitted for 12 epochs on them,
    preprocessed as its folder says, so that it tells the classes apart (an untrained one gives
    one class to every image, which any preprocessing would)."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=classes)
    torch.manual_seed(0)
    model = ViTForImageClassification(config)
    if train is not None:
        pixels, labels = train
        x = (torch.nn.functional.interpolate(pixels.float() / 255, size=(SIZE, SIZE), mode="bilinear", align_corners=False) - MEAN) / STD
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(12):
            for start in range(0, len(x), 64):
                loss = torch.nn.functional.cross_entropy(model(pixel_values=x[start:start + 64]).logits, labels[start:start + 64])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_resize": True, "size": {"height": SIZE, "width": SIZE}, "image_mean": [MEAN], "image_std": [STD]}))
    return folder


def reference_logits(folder, pixels: torch.Tensor, standardised_by=None) -> torch.Tensor:
    """The saved ViT on (N, 1, 8, 8) uint8 pixels, preprocessed by hand: [0, 1], resized, standardised.
    standardised_by (mean, std): first standardised as kdkit does for its students (the wrong view)."""
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(folder).eval()
    x = pixels.float() / 255
    if standardised_by is not None:
        x = (x - standardised_by[0]) / standardised_by[1]
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return model(pixel_values=(x - MEAN) / STD).logits


def test_an_image_classifier_preprocesses_as_its_folder_says(tmp_path):
    need_hf()
    from kdkit.models import logits_of

    folder = vit_folder(tmp_path / "vit")
    model = create_model(f"hf:{folder}", 10).eval()
    pixels = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        ours = logits_of(model(pixels.float() / 255), batch=3)
    assert torch.allclose(ours, reference_logits(folder, pixels), atol=1e-5)
    assert not model.trained_here and model.reads_raw_inputs
    with pytest.raises(KdkitError, match="classifies 10 labels but the data has 3 classes"):
        create_model(f"hf:{folder}", 3)
    with pytest.raises(KdkitError, match="takes 1-channel images but the data has 3 channels"):
        model(torch.rand(1, 3, 8, 8))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": "big", "width": 8}}))
    with pytest.raises(KdkitError, match="is not a preprocessor config kdkit can read"):
        create_model(f"hf:{folder}", 10)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": 16, "image_mean": [0.5], "image_std": [0.0]}))
    with pytest.raises(KdkitError, match="which do not fit a 1-channel model"):
        create_model(f"hf:{folder}", 10)


def test_a_distill_run_gives_the_teacher_the_images_as_given(tmp_path, digits):
    """kdkit standardises the digits for its students; the ViT teacher gets them back as [0, 1] pixels:
    its row's test accuracy is the saved model's own on the raw test images."""
    need_hf()
    folder = vit_folder(tmp_path / "vit", train=(digits.train.images, digits.train.labels))
    cfg = apply_overrides(DistillConfig(), {"dataset": "digits", "teacher": f"hf:{folder}", "student": "cnn-tiny", "epochs": 1,
                                            "batch_size": 64, "progress": False, "amp": "off", "report": False,
                                            "out": str(tmp_path / "run")})
    summary = run_distill(cfg)
    expected = (reference_logits(folder, digits.test.images).argmax(1) == digits.test.labels).float().mean().item()
    wrong = reference_logits(folder, digits.test.images, (digits.mean[0], digits.std[0])).argmax(1)
    assert (wrong == digits.test.labels).float().mean().item() != pytest.approx(expected)  # the check can tell the views apart
    assert expected > 0.5 and summary["rows"]["teacher"]["metrics"]["accuracy"]["mean"] == pytest.approx(expected)
    with pytest.raises(KdkitError, match="Hugging Face image classifier, which reads the images as given"):
        run_distill(apply_overrides(cfg, {"teacher": f"hf:{folder},cnn-tiny", "out": str(tmp_path / "two")}))
