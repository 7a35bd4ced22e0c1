"""The model registry: names -> factories, `create_model`, the `module:function` user hook, and
checks that a model fits the data (`check_input`).

Every factory takes (num_classes, in_channels=3, image_size=32, **options) and returns an
nn.Module whose forward maps (B, C, H, W) images to (B, num_classes) logits and which lists its
stage outputs in `feature_modules` (names from named_modules(), for feature-distillation taps).
A user's `module:function` gets num_classes, in_channels and image_size only where its signature
names them (never through **kwargs: torchvision's resnet18 would pass them on to ResNet), plus the
keyword arguments the user gives (model_kwargs); its forward may return logits in any form of
models/outputs.py.
"""
import importlib
import inspect
import re
from pathlib import Path

import torch
import torch.nn as nn

from kdkit.data.dataset import example_inputs
from kdkit.errors import KdkitError, did_you_mean, unknown
from kdkit.models.hf import hf_model, is_hf
from kdkit.models.cnn import cnn, cnn_tiny, cnn_x0_5, cnn_x0_25
from kdkit.models.mlp import hinton_student, hinton_teacher, mlp
from kdkit.models.mobilenetv2 import mobilenetv2
from kdkit.models.outputs import logits_of
from kdkit.models.resnet import (resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44,
                                 resnet56, resnet110)
from kdkit.models.shufflenetv2 import shufflenetv2
from kdkit.models.text import bag_of_ngrams, bilstm, textcnn
from kdkit.models.vgg import vgg8, vgg11, vgg13
from kdkit.models.wrn import wrn, wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

MODELS = {
    "mlp": mlp,
    "hinton-teacher": hinton_teacher,
    "hinton-student": hinton_student,
    "cnn": cnn,
    "cnn-x0.5": cnn_x0_5,
    "cnn-x0.25": cnn_x0_25,
    "cnn-tiny": cnn_tiny,
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "mobilenetv2": mobilenetv2,
    "shufflenetv2": shufflenetv2,
    "bag-of-ngrams": bag_of_ngrams,
    "bilstm": bilstm,
    "textcnn": textcnn,
}
TEXT_MODELS = ("bag-of-ngrams", "bilstm", "textcnn")  # take token ids (B, L), sized by vocab_size

SIZE_ARGUMENTS = ("num_classes", "in_channels", "image_size", "vocab_size")


def list_models() -> list[str]:
    """Registered model names, sorted (parametrised names like mlp-1200-1200 are accepted too)."""
    return sorted(MODELS)


def parse_name(name: str):
    """(family factory, options) for a parametrised name, or None.

    mlp-1200-1200 -> widths (1200, 1200); cnn-x0.5 -> width 0.5; wrn_16_4 or wrn-16-4 -> WRN-16-4.
    """
    if match := re.fullmatch(r"mlp((?:-\d+)+)", name):
        return mlp, {"widths": tuple(int(w) for w in match[1][1:].split("-"))}
    if match := re.fullmatch(r"cnn-x(\d*\.?\d+)", name):
        return cnn, {"width": float(match[1])}
    if match := re.fullmatch(r"wrn[_-](\d+)[_-](\d+)", name):
        return wrn, {"depth": int(match[1]), "widen_factor": int(match[2])}
    return None


def resolve(name: str):
    """(factory, options fixed by the name) for a registered or parametrised name."""
    if name in MODELS:
        return MODELS[name], {}
    parsed = parse_name(name)
    if parsed is None:
        raise unknown("model", name, list_models())
    return parsed


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 kwargs: dict | None = None, kwargs_key: str = "model_kwargs", vocab_size: int = 0) -> nn.Module:
    """Build a model by registry name, parametrised name, Hugging Face folder (hf:DIR, models/hf.py) or
    'package.module:function' user hook. kwargs: a registered architecture's options (mlp: widths,
    dropout), or the keyword arguments of a module:function (which may name num_classes, in_channels,
    image_size, vocab_size too); `kwargs_key` is the config key that gave them, named in messages.
    vocab_size: the data's token ids (0: not token ids), for the factories that name it."""
    kwargs = dict(kwargs or {})
    if is_hf(name):
        if kwargs:
            raise KdkitError(f"model '{name}' is built from its folder and takes no options; drop {kwargs_key}")
        return hf_model(name, num_classes)
    if ":" in name:
        return load_user_model(name, num_classes, in_channels, image_size, kwargs, kwargs_key, vocab_size)
    factory, fixed = resolve(name)
    if vocab_size:
        fixed = fixed | named_keywords(factory, {"vocab_size": vocab_size})
    options = [p for p in inspect.signature(factory).parameters if p not in SIZE_ARGUMENTS]
    for key in kwargs:
        if key in SIZE_ARGUMENTS:
            raise KdkitError(f"{key} of model '{name}' comes from the data; drop it from {kwargs_key}")
        if key in fixed:
            raise KdkitError(f"option '{key}' is already set by the model name '{name}'; drop one of them")
        if key not in options:
            hint = did_you_mean(key, options) if options else "it takes no options"
            raise KdkitError(f"model '{name}' has no option '{key}'; {hint}")
    return factory(num_classes, in_channels=in_channels, image_size=image_size, **fixed, **kwargs)


def create_model_from_file(name, source, trusted_hooks=(), kwargs: dict | None = None, **sizes) -> nn.Module:
    """create_model for an architecture name read from a file (a weights sidecar): it may select a
    registered kdkit architecture only. A 'module:function' hook named by a file runs only when the
    user has named the same hook (trusted_hooks: --trust-hook, --model/--student/--teacher, Python),
    so a run directory someone else made can never make kdkit import and run code."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise KdkitError(f"'{source}' names no architecture (arch: {str(name)[:60]!r}); restore the sidecar kdkit wrote")
    if ":" in name and name not in set(trusted_hooks):
        raise KdkitError(f"'{source}' names the user model hook '{name}'; kdkit never imports code named by a file. "
                         f"If you trust that code, allow it: --trust-hook {name} (Python: trusted_hooks=['{name}'])")
    if ":" not in name:
        resolve(name)  # unknown names: the registry's one-line error
    return create_model(name, **sizes, kwargs=kwargs)


def describe_model(name: str) -> str:
    """One line saying what the model is (the factory's docstring summary, plus name-set options)."""
    if is_hf(name):
        return f"Hugging Face model from the save_pretrained folder {name[3:]}"
    if ":" in name:
        return f"user model built by {name} (module:function hook)"
    factory, fixed = resolve(name)
    summary = (factory.__doc__ or factory.__name__).strip().splitlines()[0]
    if fixed:
        summary += " (" + ", ".join(f"{key}={value}" for key, value in fixed.items()) + ")"
    return summary


def load_user_model(spec: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                    kwargs: dict | None = None, kwargs_key: str = "model_kwargs", vocab_size: int = 0) -> nn.Module:
    """Call the user's 'package.module:function' with the sizes its signature names, plus kwargs
    (the config key `kwargs_key`, named in messages)."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name or ":" in function_name:
        raise KdkitError(f"model hook '{spec}' must look like 'package.module:function'")
    module = import_user_module(module_name, spec)
    function = getattr(module, function_name, None)
    if not callable(function):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        hint = f"; {did_you_mean(function_name, public)}" if public else ""
        raise KdkitError(f"module '{module_name}' has no function '{function_name}' (model hook '{spec}'){hint}")
    sizes = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    sizes |= {"vocab_size": vocab_size} if vocab_size else {}
    keywords = named_keywords(function, sizes) | (kwargs or {})  # the user's model_kwargs win
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins and C extensions have no signature: just call them
        signature = None
    try:
        if signature is not None:
            signature.bind(**keywords)
    except TypeError as error:  # e.g. a required parameter kdkit cannot fill
        call = ", ".join(f"{k}=..." for k in keywords)
        raise KdkitError(f"model hook '{spec}' cannot be called as {function_name}({call}): {error}; give the "
                         f"argument in {kwargs_key} (e.g. --set {kwargs_key}='{{name: value}}') or a default (kdkit passes "
                         "num_classes, in_channels and image_size to parameters of those names)") from None
    model = function(**keywords)
    if not isinstance(model, nn.Module):
        raise KdkitError(f"model hook '{spec}' returned {type(model).__name__}, not a torch.nn.Module; "
                         f"make {function_name} return the model")
    return model


def import_user_module(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            top = module_name.split(".")[0]
            if Path(f"{top}.py").is_file() or Path(top).is_dir():
                raise KdkitError(f"cannot find module '{module_name}' for model hook '{spec}'; kdkit does not import from "
                                 "the working directory on its own: run with PYTHONPATH=. (or install the module)") from None
            raise KdkitError(f"cannot find module '{module_name}' for model hook '{spec}'; "
                             f"is it installed or on PYTHONPATH?") from None
        raise KdkitError(f"module '{module_name}' for model hook '{spec}' failed to import: {error}") from error


def named_keywords(function, values: dict) -> dict:
    """The entries of `values` that `function`'s signature names as keyword parameters. A **kwargs
    takes none of them: kdkit cannot know what the function does with a name it does not declare."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        return {}
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: v for k, v in values.items() if k in parameters and parameters[k].kind in keyword_kinds}


def check_input(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int, who: str = "model",
                kwargs_key: str = "model_kwargs") -> None:
    """Fail early, with a clear message, if `model` cannot map (C, H, W) images to (B, num_classes) logits."""
    classes = output_classes(model, input_shape, who)
    if classes != num_classes:
        raise KdkitError(f"{who} outputs {classes} classes but the data has {num_classes}; build it with "
                         f"num_classes={num_classes} (a module:function gets num_classes only when its signature names "
                         f"it; else give it: --set {kwargs_key}='{{num_classes: {num_classes}}}')")


def output_classes(model: nn.Module, input_shape: tuple[int, int, int], who: str = "model") -> int:
    """K of the (B, K) logits `model` returns for (C, H, W) images (any output form of models/outputs.py).

    Runs one forward on zeros of shape (2, C, H, W) in eval mode without gradients; every module's
    train/eval mode is restored afterwards.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    x = example_inputs(input_shape, 2, device=device, dtype=dtype)  # (2, C, H, W); int64 (2, L) for token ids
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as error:  # any failure here means "wrong input for this model"
        raise KdkitError(f"{who} cannot take input of shape {input_shape}: {short_reason(error)}; use a model "
                         f"built for this input (e.g. --student with in_channels/image_size matching the "
                         f"dataset)") from error
    finally:
        for module, training in modes:
            module.training = training
    return logits_of(out, f"the {who}", batch=2).shape[1]


def short_reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())
