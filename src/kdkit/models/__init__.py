"""Models: a registry of classifiers for distillation, and the checks that a model fits the data.

    from kdkit.models import create_model, check_input
    model = create_model("resnet8x4", num_classes=100)           # registry name
    model = create_model("mlp-1200-1200", num_classes=10, in_channels=1, image_size=28, kwargs={"dropout": 0.5})
    model = create_model("my_pkg.nets:make_net", num_classes=10)  # user hook
    check_input(model, (3, 32, 32), num_classes=100)

One file per family (mlp, cnn, resnet, wrn, vgg, mobilenetv2, shufflenetv2); the registry, the user
hook and the checks live in registry.py; the one rule that reads the logits out of any model's output
(a tensor, `.logits`, `["logits"]`, a tuple's first element) in outputs.py. The CIFAR models follow
the CRD/RepDistiller zoo layouts and state_dict keys but return logits only; each lists its stage
outputs in `feature_modules`.
"""
from kdkit.models.outputs import logits_of
from kdkit.models.registry import (MODELS, check_input, count_parameters, create_model, describe_model,
                                   list_models, output_classes)

__all__ = ["MODELS", "check_input", "count_parameters", "create_model", "describe_model", "list_models", "logits_of",
           "output_classes"]
