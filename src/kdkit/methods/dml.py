"""Deep mutual learning (Zhang, Xiang, Hospedales, Lu, CVPR 2018, eqs. 1-4): no teacher; the
student and a peer train together, each matching the other's (detached) predictions:

    loss = CE(y, s) + T^2 KL(p_peer || p_s) + CE(y, peer) + T^2 KL(p_s || p_peer)

The paper updates the two networks in turn on each batch; here both update from one joint loss
(each KL term only reaches its own network, since the other side is detached), which is one
optimizer step instead of two. The peer defaults to a fresh copy of the student's architecture
(`peer` names another); only the student is saved.
"""
import copy

from torch import nn

from kdkit.losses.kd import kd_loss
from kdkit.methods.base import Method
from kdkit.methods.hyper import TEMPERATURE
from kdkit.models.outputs import logits_of


class DML(Method):
    needs_teacher = False
    needs_peer = True
    hyperparameters = (TEMPERATURE, "label_smoothing")
    paper = "a peer network and the student teach each other online (Zhang et al., CVPR 2018)"

    def __init__(self, student, teacher=None, peer: nn.Module | None = None, temperature: float = 1.0,
                 label_smoothing: float = 0.0):
        super().__init__(student, None)
        if peer is None:
            peer = copy.deepcopy(student)
            for module in peer.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        self.peer = peer
        self.temperature, self.label_smoothing = temperature, label_smoothing

    def forward(self, x, y, index=None):
        logits = logits_of(self.student(x), "the student", len(x))
        peer_logits = logits_of(self.peer(x), "the peer", len(x))
        ce = self.hard_ce(logits, y, self.label_smoothing)
        peer_ce = self.hard_ce(peer_logits, y, self.label_smoothing)
        mutual = kd_loss(logits, peer_logits.detach(), self.temperature)
        peer_mutual = kd_loss(peer_logits, logits.detach(), self.temperature)
        loss = ce + mutual + peer_ce + peer_mutual
        return dict(loss=loss, logits=logits, ce=ce, mutual=mutual, peer_ce=peer_ce, peer_mutual=peer_mutual)
