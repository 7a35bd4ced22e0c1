"""DIST: match the teacher's inter- and intra-class prediction relations (Huang et al. 2022).

loss = ce_weight * CE(y, s) + T^2 * (beta * inter + gamma * intra)
inter = mean_i (1 - pearson(p_s[i, :], p_t[i, :])),  intra = mean_k (1 - pearson(p_s[:, k], p_t[:, k]))
with p = softmax(logits / T).

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022, eq. 8.
The defaults (T = 1, beta = 1, gamma = 1, ce_weight = 1) are the paper's CIFAR-100 and ImageNet
baseline setting. intra correlates each class over the batch, so it depends on the batch size.
"""
import torch.nn.functional as F

from kdkit.losses.dist import dist_loss
from kdkit.methods.base import Method


class DIST(Method):
    hyperparameters = ("temperature", "dist_beta", "dist_gamma", "ce_weight", "label_smoothing")
    paper = "inter- and intra-class relations of predictions (Huang et al., NeurIPS 2022)"

    def __init__(self, student, teacher, temperature: float = 1.0, dist_beta: float = 1.0,
                 dist_gamma: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(student, teacher)
        self.temperature = temperature
        self.dist_beta = dist_beta
        self.dist_gamma = dist_gamma
        self.ce_weight = ce_weight
        self.label_smoothing = label_smoothing

    def terms(self, s, t, y, index):
        ce = F.cross_entropy(s.logits.float(), y, label_smoothing=self.label_smoothing)
        dist = dist_loss(s.logits, t.logits, self.temperature)
        scale = self.temperature**2
        return {"ce": (self.ce_weight, ce), "inter": (scale * self.dist_beta, dist["inter"]),
                "intra": (scale * self.dist_gamma, dist["intra"])}
