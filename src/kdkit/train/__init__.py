"""Training: the one loop (loop.py: fit), where and how it runs (device.py), the optimizer and schedule
(optim.py), what it records (meters.py) and its checkpoints and --resume rules (state.py)."""
from kdkit.train.device import autocast_dtype, parse_device, select_device, uses_channels_last
from kdkit.train.loop import FitResult, compile_models, fit
from kdkit.train.optim import lr_at, make_optimizer
from kdkit.train.state import (CHECKPOINT_FIELDS, POSITION_KEYS, RUN_KEYS, State, check_resume_settings,
                               complete_checkpoints)

__all__ = ["CHECKPOINT_FIELDS", "POSITION_KEYS", "RUN_KEYS", "FitResult", "State", "autocast_dtype",
           "check_resume_settings", "compile_models", "complete_checkpoints", "fit", "lr_at", "make_optimizer",
           "parse_device", "select_device", "uses_channels_last"]
