"""DIST: match the teacher's inter- and intra-class prediction relations (Huang et al. 2022).

loss = ce_weight * CE(y, s) + T^2 * (beta * inter + gamma * intra)
inter = mean_i (1 - pearson(p_s[i, :], p_t[i, :])),  intra = mean_k (1 - pearson(p_s[:, k], p_t[:, k]))
with p = softmax(logits / T).

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022, eq. 8.
The defaults (T = 1, beta = 1, gamma = 1, ce_weight = 1) are the paper's CIFAR-100 and ImageNet
baseline setting. intra correlates each class over the batch, so it depends on the batch size.
"""

from kdkit.losses.dist import dist_loss
from kdkit.losses.kd import standardize
from kdkit.methods.base import Method
from kdkit.methods.hyper import CE_WEIGHT, LOGIT_STANDARDIZE, TEMPERATURE, WEIGHT, Hyper, around

DIST_BETA = Hyper("dist_beta", WEIGHT, "weight of the inter-class relation loss (Huang et al. 2022: 1.0)", around(),
                  tuned=True)
DIST_GAMMA = Hyper("dist_gamma", WEIGHT, "weight of the intra-class relation loss (Huang et al. 2022: 1.0)", around(),
                   tuned=True)


class DIST(Method):
    hyperparameters = (TEMPERATURE, DIST_BETA, DIST_GAMMA, CE_WEIGHT, "label_smoothing", LOGIT_STANDARDIZE)
    paper = "inter- and intra-class relations of predictions (Huang et al., NeurIPS 2022)"

    def __init__(self, student, teacher, temperature: float = 1.0, dist_beta: float = 1.0,
                 dist_gamma: float = 1.0, ce_weight: float = 1.0, label_smoothing: float = 0.0,
                 logit_standardize: bool = False):
        super().__init__(student, teacher)
        self.temperature = temperature
        self.dist_beta = dist_beta
        self.dist_gamma = dist_gamma
        self.ce_weight = ce_weight
        self.label_smoothing = label_smoothing
        self.logit_standardize = logit_standardize

    def terms(self, s, t, y, index):
        ce = self.hard_ce(s.logits, y, self.label_smoothing)
        student, teacher = (standardize(s.logits), standardize(t.logits)) if self.logit_standardize else (s.logits, t.logits)
        dist = dist_loss(student, teacher, self.temperature)
        scale = self.temperature**2
        return {"ce": (self.ce_weight, ce), "inter": (scale * self.dist_beta, dist["inter"]),
                "intra": (scale * self.dist_gamma, dist["intra"])}
