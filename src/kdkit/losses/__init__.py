"""Distillation losses: pure functions of tensors, each citing its paper and equation."""
from kdkit.losses.balanced import (balanced_kd_loss, balanced_softmax_loss, class_balanced_ce, effective_number_weights,
                                   logit_adjusted_kd_loss, logit_adjusted_loss, per_sample_balanced_kd_loss, posthoc_adjust)
from kdkit.losses.crd import CRDLoss
from kdkit.losses.dist import dist_loss
from kdkit.losses.dkd import dkd_loss
from kdkit.losses.feature import at_loss, fitnet_loss, linear_cka, nst_loss, pkt_loss, rkd_loss, sp_loss
from kdkit.losses.kd import kd_loss, standardize

__all__ = ["balanced_kd_loss", "balanced_softmax_loss", "class_balanced_ce", "effective_number_weights",
           "logit_adjusted_kd_loss", "logit_adjusted_loss", "per_sample_balanced_kd_loss", "posthoc_adjust", "CRDLoss", "at_loss", "dist_loss", "dkd_loss", "fitnet_loss", "kd_loss", "linear_cka", "nst_loss",
           "pkt_loss", "rkd_loss", "sp_loss", "standardize"]
