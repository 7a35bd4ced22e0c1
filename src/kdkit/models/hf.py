"""Hugging Face transformers as kdkit models: `--teacher hf:DIR`, `--student hf:DIR` (docs/text.md).

    model = hf_model("hf:models/minilm", num_classes=2)   # (B, L) int64 ids -> (B, 2) logits

DIR is a local folder written by `save_pretrained`, read offline (`local_files_only`), weights from
safetensors only (a pytorch_model.bin is a pickle: refused), `trust_remote_code` never. `hf:` is a
prefix the user types; kdkit never loads an hf: name read from a file unless the user named it too.

    a ...ForSequenceClassification folder   used as it is (its labels must be the data's classes);
                                            a teacher is not trained again
    a ...ForImageClassification folder      used as it is over kdkit's images, which it reads as given
                                            and preprocesses as its preprocessor_config.json says
    any other folder (a bare encoder, e.g.  AutoModel plus a classification head (mean of the token
    sentence-transformers' MiniLM)          states over the real tokens, then Linear), which kdkit
                                            trains in the run (a teacher: --teacher-epochs)

The forward takes kdkit's (B, L) ids and builds attention_mask = ids != pad_id itself (pad_id: the
folder's tokenizer's). It first drops the trailing columns that are padding in every row (the ids are
padded to the longest sentence of the data set; a batch's are shorter): the outputs are the same, the
work follows the batch's longest sentence. A sequence classifier returns the model's own output (kdkit.models.logits_of
reads its .logits); the encoder with a head returns the logits.
"""
from pathlib import Path

import torch
from torch import nn

from kdkit.data.text import HF_PREFIX, hf_folder, hf_pad_id
from kdkit.errors import KdkitError
from kdkit.extras import need


def is_hf(name) -> bool:
    return isinstance(name, str) and name.startswith(HF_PREFIX)


class HfSequenceClassifier(nn.Module):
    """A saved ...ForSequenceClassification model over kdkit's ids."""

    trained_here = False  # its head is trained already: a teacher is used as it is

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id
        self.feature_modules = []

    def forward(self, ids: torch.Tensor):
        ids = trimmed(ids, self.pad_id)
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long())  # a ModelOutput with .logits


class HfImageClassifier(nn.Module):
    """A saved ...ForImageClassification model (ViT, ConvNeXt, ...) over kdkit's images, used as it is.

    It was trained on its own preprocessing, so it reads the images as given (kdkit undoes its own
    standardisation for it, `reads_raw_inputs`: uint8 pixels as [0, 1]) and applies the folder's
    preprocessor_config.json itself: resized to its size (bilinear), grey images repeated to its
    channels, then (x - image_mean) / image_std."""

    trained_here = False
    reads_raw_inputs = True

    def __init__(self, model: nn.Module, size: tuple[int, int], mean: list[float], std: list[float]):
        super().__init__()
        self.model, self.size = model, size
        self.channels = int(getattr(model.config, "num_channels", 3))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.feature_modules = []

    def forward(self, x: torch.Tensor):
        if x.shape[1] not in (1, self.channels):
            raise KdkitError(f"the Hugging Face image classifier takes {self.channels}-channel images but the data has "
                             f"{x.shape[1]} channels; use data of its channels (grey images are repeated to them)")
        if x.shape[1] == 1 and self.channels > 1:
            x = x.expand(-1, self.channels, -1, -1)  # (B, C, H, W) grey as every channel
        if tuple(x.shape[2:]) != self.size:
            x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.model(pixel_values=(x - self.mean) / self.std)  # a ModelOutput with .logits


def image_preprocessing(folder: Path, config) -> tuple[tuple[int, int], list[float], list[float]]:
    """(size, image_mean, image_std) of the folder's preprocessor_config.json (a shortest_edge size
    is taken as square), else the model config's image_size and mean = std = 0.5 (ViT's)."""
    side = int(getattr(config, "image_size", 224))
    channels = int(getattr(config, "num_channels", 3))
    size, mean, std = (side, side), [0.5] * channels, [0.5] * channels
    path = folder / "preprocessor_config.json"
    if path.is_file():
        import json

        try:
            values = json.loads(path.read_text())
            given = values.get("crop_size") if values.get("do_center_crop") else values.get("size")
            if isinstance(given, dict) and "height" in given:
                size = (int(given["height"]), int(given["width"]))
            elif isinstance(given, dict) and "shortest_edge" in given:
                size = (int(given["shortest_edge"]),) * 2
            elif isinstance(given, int):
                size = (given, given)
            mean = [float(v) for v in values.get("image_mean", mean)][:channels]
            std = [float(v) for v in values.get("image_std", std)][:channels]
        except (ValueError, TypeError, AttributeError):
            raise KdkitError(f"{path} is not a preprocessor config kdkit can read (size, image_mean, image_std); "
                             "save it again with the model's image processor (save_pretrained)") from None
        if min(size) < 1 or len(mean) not in (1, channels) or len(std) != len(mean) or min(std) <= 0:
            raise KdkitError(f"{path} gives size {size}, image_mean {mean} and image_std {std}, which do not fit a "
                             f"{channels}-channel model; save it again with the model's image processor")
    return size, mean, std


class HfEncoderClassifier(nn.Module):
    """A saved encoder, its token states averaged over the real tokens (mean pooling, as
    sentence-transformers do), then a linear head trained by kdkit."""

    trained_here = True

    def __init__(self, encoder: nn.Module, num_classes: int, pad_id: int):
        super().__init__()
        self.encoder, self.pad_id = encoder, pad_id
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.feature_modules = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = trimmed(ids, self.pad_id)
        mask = (ids != self.pad_id).long()  # (B, L)
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        weights = mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, H)
        return self.head(pooled)  # (B, K)


def reads_images(spec: str) -> bool:
    """Whether hf:DIR holds an image classifier (its config.json's architectures, read as JSON)."""
    import json

    path = hf_folder(spec) / "config.json"
    try:
        architectures = json.loads(path.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False  # loading the model says what is wrong
    return any(str(a).endswith("ForImageClassification") for a in architectures)


def trimmed(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L') `ids` without the trailing columns that are pad_id in every row (at least one column
    kept). Those columns are masked out of attention, so the model's outputs do not change. Not while
    exporting or tracing, where the length must stay the input's."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or ids.shape[1] <= 1:
        return ids
    used = (ids != pad_id).any(dim=0).nonzero()  # (U, 1) columns with a real token somewhere
    return ids[:, :int(used.max()) + 1 if len(used) else 1]


def hf_model(spec: str, num_classes: int) -> nn.Module:
    """The model in hf:DIR (module docstring) for `num_classes` classes."""
    transformers = need("transformers", f"the model {spec}")
    transformers.utils.logging.disable_progress_bar()  # one bar per load of a local folder says nothing
    folder = hf_folder(spec)
    check_weights_file(folder, spec)
    options = dict(local_files_only=True, trust_remote_code=False)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **options)
        architectures = [str(a) for a in config.architectures or []]
        classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
        images = any(a.endswith("ForImageClassification") for a in architectures)
        auto = (transformers.AutoModelForSequenceClassification if classifier else
                transformers.AutoModelForImageClassification if images else transformers.AutoModel)
        model = auto.from_pretrained(folder, use_safetensors=True, **options)
    except (OSError, ValueError, KeyError) as error:
        reason = " ".join(str(error).split())[:160]
        raise KdkitError(f"cannot load {spec} ({reason}); give a folder written by save_pretrained with config.json "
                         "and model.safetensors, of an architecture transformers knows") from None
    if (classifier or images) and model.config.num_labels != num_classes:
        raise KdkitError(f"{spec} classifies {model.config.num_labels} labels but the data has {num_classes} classes; "
                         "use a classifier of the data's classes, or its encoder alone (kdkit adds and trains a head)")
    if images:
        return HfImageClassifier(model, *image_preprocessing(folder, model.config))
    pad_id = hf_pad_id(folder)
    if not classifier:
        return HfEncoderClassifier(model, num_classes, pad_id)
    return HfSequenceClassifier(model, pad_id)


def check_weights_file(folder: Path, spec: str) -> None:
    """The folder's weights must be safetensors: a pickle (pytorch_model.bin) could run code when read."""
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return
    if any(folder.glob("pytorch_model*.bin")) or any(folder.glob("*.pt")):
        raise KdkitError(f"{spec} holds pytorch_model.bin, a pickle kdkit never loads; save the model with "
                         "save_pretrained(DIR, safe_serialization=True) to get model.safetensors")
    raise KdkitError(f"{spec} has no model.safetensors; save the model there with save_pretrained(DIR)")
