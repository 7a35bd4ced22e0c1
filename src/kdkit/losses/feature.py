"""Feature and relation distillation losses: pure functions of a student and a teacher tensor.

The student tensor gets the gradients; the teacher tensor is a constant target (callers compute it
under no_grad). Each loss computes in at least float32 whatever the autocast dtype (float64 stays
float64) and returns a scalar.

- FitNets: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. 3.
- AT: Zagoruyko, Komodakis, "Paying More Attention to Attention", ICLR 2017, eqs. 1-2.
- SP: Tung, Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019, eqs. 2-4.
- RKD: Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019, eqs. 3-7.
- PKT: Passalis, Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
  ECCV 2018, eqs. 7-10.
- NST: Huang, Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017,
  eq. 4 with the polynomial kernel k(a, b) = (a . b + c)^d, d = 2, c = 0.
- CKA: Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited",
  ICML 2019, linear-kernel CKA (section 3).
"""
import torch
import torch.nn.functional as F


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The inputs' promoted dtype, at least float32 (bf16/fp16 -> float32, float64 stays)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool (B, C_a, H_a, W_a) and (B, C_b, H_b, W_b) to a common H, W.

    The larger map is pooled down to the smaller one's size; channels may differ. If one map is
    taller and the other wider, both go to (min H, min W). Maps already at that size are untouched.
    """
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    a = a if tuple(a.shape[2:]) == size else F.adaptive_avg_pool2d(a, size)
    b = b if tuple(b.shape[2:]) == size else F.adaptive_avg_pool2d(b, size)
    return a, b


def fitnet_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss (eq. 3) as the mean squared error over all elements.

    student: the regressor's output r(v_g), any shape; teacher: the hint u_h, the same shape. The
    paper's 1/2 ||u_h - r(v_g)||^2 is a sum; the mean keeps the scale independent of the map size.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"fitnet_loss: student shape {tuple(student.shape)} differs from teacher "
                         f"shape {tuple(teacher.shape)}; add a regressor to the student")
    dtype = compute_dtype(student, teacher)
    return F.mse_loss(student.to(dtype), teacher.to(dtype))


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W): Q = mean_c |A_c|^p (AT eq. 1, mean rather than sum), flattened and
    L2-normalised per sample (the Q / ||Q||_2 of eq. 2)."""
    f = f.to(compute_dtype(f))
    return F.normalize(f.abs().pow(p).mean(dim=1).flatten(1), dim=1)  # (B, H*W)


def at_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer (eq. 2) in its widely used form: mean over batch and positions of
    (Q_s - Q_t)^2, with Q = attention_map. The paper sums a p-norm of the difference per layer and
    weights it by beta / 2; this squared mean is what the reference code trains with.

    student: (B, C_s, H_s, W_s), teacher: (B, C_t, H_t, W_t); channels may differ, and differing
    spatial sizes are pooled to the smaller one first (match_spatial).
    """
    dtype = compute_dtype(student, teacher)
    student, teacher = match_spatial(student.to(dtype), teacher.to(dtype))
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


def similarity_matrix(f: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, B): G = Q Q^T with Q = f flattened to (B, D) (SP eq. 2), each row
    L2-normalised (eq. 3)."""
    f = f.to(compute_dtype(f)).flatten(1)  # (B, D)
    return F.normalize(f @ f.T, dim=1)  # (B, B)


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (eq. 4): ||G_s - G_t||_F^2 / B^2. student (B, ...), teacher (B, ...)."""
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"sp_loss: batch sizes differ, {student.shape[0]} vs {teacher.shape[0]}")
    batch = student.shape[0]
    return (similarity_matrix(student) - similarity_matrix(teacher)).pow(2).sum() / batch**2


def pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances; the diagonal is 0 (with a 0 gradient)."""
    return (e[:, None, :] - e[None, :, :]).norm(dim=2)  # (B, B)


def angle_cosines(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B): [j, i, k] = <unit(e_i - e_j), unit(e_k - e_j)>, the cosine of the angle
    at e_j (RKD eq. 6). A zero difference (i == j or k == j) normalises to 0, so its cosine is 0."""
    u = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # (B, B, D); u[j, i] = unit(e_i - e_j)
    return u @ u.transpose(1, 2)  # (B, B, B)


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> dict[str, torch.Tensor]:
    """Relational KD: distance_weight * distance + angle_weight * angle (the paper's 25 and 50).

    distance (eqs. 3-5): pairwise distances, each side divided by its mean over the B(B-1)
    off-diagonal pairs (mu, eq. 4), then Huber (smooth L1, beta = 1, eq. 8) averaged over all B*B
    entries; the diagonal is 0 on both sides, so it only dilutes the mean, as in the reference code.
    angle (eqs. 6-7): Huber between the cosines of all B^3 triples, averaged over all of them; the
    degenerate triples (i == j or k == j) are 0 on both sides, again as the reference code does.
    student: (B, D_s), teacher: (B, D_t); dims beyond 1 are flattened. Returns dict(loss, distance, angle).
    """
    dtype = compute_dtype(student, teacher)
    s, t = student.to(dtype).flatten(1), teacher.to(dtype).flatten(1)  # (B, D_s), (B, D_t)
    pairs = max(s.shape[0] * (s.shape[0] - 1), 1)
    d_s, d_t = pairwise_distances(s), pairwise_distances(t)  # (B, B)
    d_s = d_s / (d_s.sum() / pairs).clamp_min(1e-12)
    d_t = d_t / (d_t.sum() / pairs).clamp_min(1e-12)
    distance = F.smooth_l1_loss(d_s, d_t, beta=1.0)
    angle = F.smooth_l1_loss(angle_cosines(s), angle_cosines(t), beta=1.0)
    return dict(loss=distance_weight * distance + angle_weight * angle, distance=distance, angle=angle)


def conditional_probabilities(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B): P[i, j] = K(e_i, e_j) / sum_k K(e_i, e_k), with the cosine kernel mapped to
    [0, 1], K = (cos + 1) / 2 (PKT eqs. 7-9). The sum includes k = i, as the reference code does;
    the paper leaves the diagonal out."""
    e = F.normalize(e.flatten(1), dim=1)  # (B, D)
    kernel = (e @ e.T + 1) / 2  # (B, B)
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (eq. 10) at the reference code's scale: the mean over all
    B x B entries of p_t[i, j] log((p_t[i, j] + eps) / (p_s[i, j] + eps)).

    That is KL(P_t || P_s) per row averaged over rows, divided by B, as RepDistiller's PKT criterion
    computes it (the paper sums over i and j). Its CIFAR-100 weight of 30000 was tuned for this
    scale; the per-row mean would be B times larger (64 times at RepDistiller's batch size).
    student: (B, D_s), teacher: (B, D_t), flattened beyond dim 1.
    """
    dtype = compute_dtype(student, teacher)
    p_s = conditional_probabilities(student.to(dtype))  # (B, B)
    p_t = conditional_probabilities(teacher.to(dtype))  # (B, B)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def mean_poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C_a, N), (B, C_b, N) -> (B,): mean over channel pairs of (a_i . b_j)^2."""
    return (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))


def nst_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer (eq. 4): squared MMD between the student's and the teacher's
    channel distributions, each channel a point in R^{H*W} normalised to unit length:
    MMD^2 = mean k(s_i, s_j) + mean k(t_i, t_j) - 2 mean k(s_i, t_j), k(a, b) = (a . b)^2,
    averaged over the batch. student (B, C_s, H_s, W_s), teacher (B, C_t, H_t, W_t); spatial
    sizes are matched as in at_loss.
    """
    dtype = compute_dtype(student, teacher)
    student, teacher = match_spatial(student.to(dtype), teacher.to(dtype))
    s = F.normalize(student.flatten(2), dim=2)  # (B, C_s, H*W)
    t = F.normalize(teacher.flatten(2), dim=2)  # (B, C_t, H*W)
    mmd = mean_poly_kernel(s, s) + mean_poly_kernel(t, t) - 2 * mean_poly_kernel(s, t)  # (B,)
    return mmd.mean()


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Linear CKA = ||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F + eps), columns centred; a similarity in [0, 1].

    x: (B, D_x), y: (B, D_y), flattened beyond dim 1. Computed with the (B, B) Gram matrices, which
    give the same numbers (||y^T x||_F^2 = tr(x x^T y y^T), ||x^T x||_F = ||x x^T||_F) at a cost
    linear in D.
    """
    dtype = compute_dtype(x, y)
    x, y = x.to(dtype).flatten(1), y.to(dtype).flatten(1)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)  # (B, D_x), (B, D_y)
    k_x, k_y = x @ x.T, y @ y.T  # (B, B)
    return (k_x * k_y).sum() / (k_x.norm() * k_y.norm() + eps)
