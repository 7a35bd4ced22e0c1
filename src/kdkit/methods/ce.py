"""Cross-entropy training: the teacher's own training and the scratch student baseline.

`balance` chooses the hard-label loss for long-tailed data (kdkit.losses.balanced):
  none              CE (with optional label smoothing)
  class_balanced    CE weighted by the effective number of samples (Cui et al., CVPR 2019, eq. 10)
  balanced_softmax  CE on logits + log prior (Ren et al., NeurIPS 2020, eq. 4)
  logit_adjusted    CE on logits + tau log prior (Menon et al., ICLR 2021, eq. 10)
The last three need the training split's class counts.
"""
import torch

from kdkit.errors import KdkitError, unknown
from kdkit.losses.balanced import effective_number_weights, with_log_prior
from kdkit.methods.base import Method

BALANCES = ("none", "class_balanced", "balanced_softmax", "logit_adjusted")


class CrossEntropy(Method):
    """loss = CE(y, student(x)) (or its balanced form). No teacher."""

    needs_teacher = False
    hyperparameters = ("label_smoothing", "balance", "tau", "cb_beta")
    paper = "cross-entropy on the labels only (the scratch baseline)"

    def __init__(self, student, teacher=None, label_smoothing: float = 0.0, balance: str = "none", tau: float = 1.0,
                 cb_beta: float = 0.9999, class_counts=None):
        super().__init__(student, None)
        if balance not in BALANCES:
            raise unknown("balance", balance, BALANCES)
        if balance != "none" and class_counts is None:
            raise KdkitError(f"balance={balance} needs class_counts (the training split's samples per class)")
        self.label_smoothing, self.balance, self.tau = label_smoothing, balance, tau
        counts = torch.as_tensor(list(class_counts or [1]), dtype=torch.float64)
        self.register_buffer("class_counts", counts.float(), persistent=False)
        self.register_buffer("class_weights", effective_number_weights(counts, cb_beta).float(), persistent=False)

    def terms(self, s, t, y, index):
        logits = s.logits
        if self.balance == "class_balanced":
            ce = self.hard_ce(logits, y, class_weights=self.class_weights)
        elif self.balance in ("balanced_softmax", "logit_adjusted"):  # CE on z + tau log prior (balanced softmax: tau = 1)
            tau = self.tau if self.balance == "logit_adjusted" else 1.0
            ce = self.hard_ce(with_log_prior(logits, self.class_counts, tau), y)
        else:
            ce = self.hard_ce(logits, y, self.label_smoothing)
        return {"ce": (1.0, ce)}
