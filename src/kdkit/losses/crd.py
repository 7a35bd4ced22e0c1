"""Contrastive Representation Distillation (CRD), NCE form with momentum memory banks.

Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020, section 3. Student
and teacher features are projected (linear + L2 normalise) to a shared feat_dim space. For a
sample i, the pair (student_i, teacher_i) is the positive; K other training samples are the
negatives. Their embeddings come from two memory banks indexed by training-set position, one of
past student embeddings and one of past teacher embeddings, so K can far exceed the batch size.
The critic is h = P / (P + K * P_n) with P = exp(v . m / T) / Z and the uniform noise
P_n = 1 / n_data; the NCE loss is -[log h(positive) + sum_k log(1 - h(negative_k))]. Z is a
constant, estimated once from the first batch as mean(exp(scores / T)) * n_data. The banks are
then moved towards the batch's embeddings: m <- normalise(momentum * m + (1 - momentum) * v).
The paper's defaults: feat_dim 128, K = 16384, T = 0.07, momentum 0.5.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from kdkit.losses.feature import compute_dtype

# Added to the critic's denominators, as in the reference code, so log stays finite.
NCE_EPS = 1e-7


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """NCE loss averaged over the batch. scores: (B, K+1), column 0 the positive's P, the rest the
    K negatives'. With K * P_n = K / n_data:
    loss = -mean_b[log(P_pos / (P_pos + K P_n + eps)) + sum_k log(K P_n / (P_neg_k + K P_n + eps))].
    """
    scores = scores.to(compute_dtype(scores))
    noise = (scores.shape[1] - 1) / n_data  # K * P_n
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + NCE_EPS))  # (B,)
    log_neg = torch.log(noise / (scores[:, 1:] + noise + NCE_EPS))  # (B, K)
    return -(log_pos + log_neg.sum(dim=1)).mean()


def sample_negatives(index: torch.Tensor, n_data: int, k: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) training-set positions -> (B, K+1) long: column 0 = index, then K uniform draws from
    [0, n_data), with replacement, as the reference code does. A draw may be the positive itself
    (each with probability 1 / n_data, about k / n_data of a row); that is left as it is.
    """
    device = generator.device if generator is not None else index.device
    negatives = torch.randint(0, n_data, (index.shape[0], k), generator=generator, device=device)
    return torch.cat([index.long()[:, None], negatives.to(index.device)], dim=1)  # (B, K+1)


class ContrastMemory(nn.Module):
    """Two memory banks of unit embeddings, (n_data, dim) each, and their constants Z.

    Buffers (so they are checkpointed): memory_student, memory_teacher, initialised uniformly in
    [-a, a] with a = 1 / sqrt(dim / 3) (variance 1 / dim, so rows start near unit length) from a
    generator seeded with `seed`; z_student, z_teacher, -1 until the first forward sets them.
    """

    def __init__(self, n_data: int, dim: int = 128, temperature: float = 0.07, momentum: float = 0.5,
                 seed: int = 0):
        super().__init__()
        self.n_data, self.temperature, self.momentum = n_data, temperature, momentum
        generator = torch.Generator().manual_seed(seed)
        bound = 1 / math.sqrt(dim / 3)
        for side in ("student", "teacher"):
            self.register_buffer(f"memory_{side}", torch.rand(n_data, dim, generator=generator) * 2 * bound - bound)
            self.register_buffer(f"z_{side}", torch.tensor(-1.0))

    def scores(self, memory: torch.Tensor, embed: torch.Tensor, contrast_index: torch.Tensor) -> torch.Tensor:
        """exp(memory[contrast_index] . embed / T): (B, K+1), not yet divided by Z."""
        weights = memory[contrast_index]  # (B, K+1, dim); a copy, so later bank updates don't touch it
        return torch.exp(torch.einsum("bkd,bd->bk", weights, embed) / self.temperature)

    def forward(self, embed_s: torch.Tensor, embed_t: torch.Tensor, index: torch.Tensor,
                contrast_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """embed_s, embed_t: (B, dim), unit length; index: (B,) distinct training-set positions;
        contrast_index: (B, K+1), column 0 = index. Returns (out_s, out_t), each (B, K+1) = P.

        The student embedding is scored against the teacher bank (out_s) and the teacher embedding
        against the student bank (out_t). Then both banks are updated at `index` (no grad).
        """
        dtype = self.memory_student.dtype
        embed_s, embed_t = embed_s.to(dtype), embed_t.to(dtype)
        out_s = self.scores(self.memory_teacher, embed_s, contrast_index)  # (B, K+1)
        out_t = self.scores(self.memory_student, embed_t, contrast_index)  # (B, K+1)
        with torch.no_grad():
            for z, out in ((self.z_student, out_s), (self.z_teacher, out_t)):
                if z.item() < 0:
                    z.fill_(out.mean() * self.n_data)
            for memory, embed in ((self.memory_student, embed_s), (self.memory_teacher, embed_t)):
                mixed = self.momentum * memory[index] + (1 - self.momentum) * embed  # (B, dim)
                memory.index_copy_(0, index, F.normalize(mixed, dim=1))
        return out_s / self.z_student, out_t / self.z_teacher


class Embed(nn.Module):
    """(B, dim_in) -> (B, dim_out): linear projection, then L2 normalise; dims beyond 1 are flattened."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class CRDLoss(nn.Module):
    """CRD: nce_loss(out_s) + nce_loss(out_t), with both embed heads trained by the loss.

    nce_k is capped at n_data - 1 (a tiny dataset gets fewer negatives, no error). The generator
    drawing negatives is seeded from `seed` and its state is part of the state_dict ("_extra_state"),
    so a resumed run draws the negatives an uninterrupted one would.
    """

    def __init__(self, student_dim: int, teacher_dim: int, n_data: int, feat_dim: int = 128,
                 nce_k: int = 16384, nce_t: float = 0.07, momentum: float = 0.5, seed: int = 0):
        super().__init__()
        self.embed_s = Embed(student_dim, feat_dim)
        self.embed_t = Embed(teacher_dim, feat_dim)
        self.memory = ContrastMemory(n_data, feat_dim, nce_t, momentum, seed)
        self.n_data = n_data
        self.nce_k = max(0, min(nce_k, n_data - 1))
        self.generator = torch.Generator().manual_seed(seed + 1)

    def get_extra_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor):
        self.generator.set_state(state.to("cpu", torch.uint8))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, index: torch.Tensor,
                contrast_index: torch.Tensor | None = None) -> torch.Tensor:
        """f_s: (B, D_s), f_t: (B, D_t) (flattened beyond dim 1); index: (B,) training-set positions.
        contrast_index (B, K+1) may be given; by default it is drawn by sample_negatives."""
        if contrast_index is None:
            contrast_index = sample_negatives(index, self.n_data, self.nce_k, self.generator)
        out_s, out_t = self.memory(self.embed_s(f_s), self.embed_t(f_t), index, contrast_index)
        return nce_loss(out_s, self.n_data) + nce_loss(out_t, self.n_data)
