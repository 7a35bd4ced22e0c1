"""The optimizer and the learning-rate schedule (a pure function of the step, so a resumed run
replays it exactly), and the max-norm constraint on hidden units (Hinton et al. 2012)."""
import math

import torch


def lr_at(step: int, steps_per_epoch: int, cfg) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warmup, then cosine/multistep/constant."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "multistep":
        epoch = step // steps_per_epoch
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


def make_optimizer(params, cfg, fused: bool = False) -> torch.optim.Optimizer:
    """Weight decay on weights (ndim > 1) only; biases and norm parameters are not decayed.
    `fused`: one fused kernel for the whole update (CUDA)."""
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, fused=fused or None)


def _max_norm_hook(weights, bound: float):
    """After every optimizer step, rescale each unit's incoming weight vector to L2 norm <= bound
    (the max-norm constraint of Hinton et al. 2012 / Srivastava et al. 2014, used with dropout)."""
    def hook(optimizer, args, kwargs):
        with torch.no_grad():
            for w in weights:
                w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=bound))
    return hook
