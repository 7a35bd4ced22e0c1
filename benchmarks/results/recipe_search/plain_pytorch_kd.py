"""KD recipe experiments on Fashion-MNIST (CPU, 1 thread)."""
import argparse, gzip, json, math, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
D = '/work/shared/data/fashion-mnist'
R = '/work/recipe'
MEAN, STD = 0.2860, 0.3530


def idx(path):
    with gzip.open(path, 'rb') as f:
        b = f.read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], 'big') for i in range(nd)]
    return torch.from_numpy(np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims).copy())


def load():
    xtr = idx(f'{D}/train-images-idx3-ubyte.gz'); ytr = idx(f'{D}/train-labels-idx1-ubyte.gz').long()
    xte = idx(f'{D}/t10k-images-idx3-ubyte.gz'); yte = idx(f'{D}/t10k-labels-idx1-ubyte.gz').long()
    g = torch.Generator().manual_seed(12345)  # fixed validation split
    p = torch.randperm(60000, generator=g)
    va, tr = p[:6000], p[6000:]
    return (xtr[tr], ytr[tr]), (xtr[va], ytr[va]), (xte, yte)


def norm(xu8):
    return (xu8.float().div_(255).sub_(MEAN).div_(STD)).unsqueeze(1)


AUGS = {1: (2, True), 2: (0, True), 3: (1, True)}  # aug mode -> (pad, flip)


def augment(xu8, g, pad=2, flip=True):
    """xu8: (B,28,28) uint8 -> augmented uint8, vectorised random translate + hflip."""
    B = xu8.shape[0]
    xp = F.pad(xu8, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    ar = torch.arange(28)
    rows = (dy[:, None] + ar)[:, :, None]
    cols = (dx[:, None] + ar)
    if flip:
        f = torch.rand(B, generator=g) < 0.5
        cols = torch.where(f[:, None], cols.flip(1), cols)
    cols = cols[:, None, :]
    return xp[torch.arange(B)[:, None, None], rows, cols]


class CNN(nn.Module):
    def __init__(self, c1, c2, fc):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 49, fc), nn.ReLU(), nn.Linear(fc, 10))

    def forward(self, x):
        return self.f(x)


def nparams(m):
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def evaluate(m, x, y, bs=1000):
    m.eval(); c = 0
    for i in range(0, len(x), bs):
        c += (m(norm(x[i:i + bs])).argmax(1) == y[i:i + bs]).sum().item()
    return 100.0 * c / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--role', choices=['teacher', 'student'], required=True)
    ap.add_argument('--arch', default='32,64,256')
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--wd', type=float, default=0.01)
    ap.add_argument('--bs', type=int, default=128)
    ap.add_argument('--aug', type=int, default=1)
    ap.add_argument('--ls', type=float, default=0.0)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--teacher', default='')  # ckpt path -> KD
    ap.add_argument('--T', type=float, default=1.0)
    ap.add_argument('--alpha', type=float, default=0.9)
    ap.add_argument('--mixup', type=float, default=0.0)  # beta param for KD-side mixup (function matching)
    ap.add_argument('--bank', type=int, default=0)  # K precomputed augmented copies (+cached teacher logits)
    ap.add_argument('--bf16', type=int, default=0)  # autocast bf16 for the trained model's forward
    ap.add_argument('--tag', default='')
    ap.add_argument('--save', default='')
    ap.add_argument('--max_steps', type=int, default=0)  # for timing probes
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(1000 + a.seed)
    (xtr, ytr), (xva, yva), (xte, yte) = load()
    c1, c2, fc = map(int, a.arch.split(','))
    m = CNN(c1, c2, fc)
    t = None
    if a.teacher:
        ck = torch.load(a.teacher, weights_only=True)  # never unpickle code (edited after the runs; same data)
        t = CNN(*ck['arch']); t.load_state_dict(ck['sd']); t.eval()
        for p in t.parameters():
            p.requires_grad_(False)
    tb = 0.0
    if a.bank:
        t1 = time.time()
        if a.aug == 2 and a.bank == 2:  # flip-only: the 2 views are exhaustive -> exact consistent teaching
            bank = torch.stack([xtr, xtr.flip(-1)])
        else:
            bank = torch.stack([augment(xtr, g, *AUGS[a.aug]) if a.aug else xtr for _ in range(a.bank)])  # K,N,28,28
        if t is not None:
            with torch.no_grad():
                with torch.autocast('cpu', dtype=torch.bfloat16):  # bf16 teacher inference: argmax-identical, ~1.7x faster
                    blog = torch.stack([torch.cat([t(norm(bank[k, i:i + 256])).float() for i in range(0, len(xtr), 256)])
                                        for k in range(a.bank)])
        tb = time.time() - t1
        print(f'bank built in {tb:.1f}s', flush=True)
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=a.wd)
    n = len(xtr); spe = n // a.bs; total = spe * a.epochs
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=total)
    t0 = time.time() - tb; step = 0; tt = tb
    for ep in range(a.epochs):
        m.train()
        perm = torch.randperm(n, generator=g)
        for i in range(spe):
            b = perm[i * a.bs:(i + 1) * a.bs]
            xb = xtr[b]; yb = ytr[b]
            if a.bank:
                kk = torch.randint(0, a.bank, (len(b),), generator=g)
                xb = bank[kk, b]
            elif a.aug:
                xb = augment(xb, g, *AUGS[a.aug])
            x = norm(xb)
            if t is not None and a.mixup > 0:
                lam = torch.distributions.Beta(a.mixup, a.mixup).sample((x.shape[0], 1, 1, 1))
                lam = torch.maximum(lam, 1 - lam)
                j = torch.randperm(x.shape[0], generator=g)
                x = lam * x + (1 - lam) * x[j]
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bool(a.bf16)):
                out = m(x).float()
            if t is None:
                loss = F.cross_entropy(out, yb, label_smoothing=a.ls)
            else:
                t1 = time.time()
                with torch.no_grad():
                    tl = blog[kk, b] if (a.bank and a.mixup == 0) else t(x)
                tt += time.time() - t1
                kl = F.kl_div(F.log_softmax(out / a.T, 1), F.log_softmax(tl / a.T, 1),
                              reduction='batchmean', log_target=True) * a.T ** 2
                if a.alpha < 1:
                    if a.mixup > 0:
                        ce = (lam.view(-1) * F.cross_entropy(out, yb, reduction='none') +
                              (1 - lam.view(-1)) * F.cross_entropy(out, yb[j], reduction='none')).mean()
                    else:
                        ce = F.cross_entropy(out, yb)
                    loss = (1 - a.alpha) * ce + a.alpha * kl
                else:
                    loss = kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step(); sch.step(); step += 1
            if a.max_steps and step >= a.max_steps:
                el = time.time() - t0
                print(json.dumps(dict(probe=True, steps=step, sec=el, sec_per_epoch=el / step * spe,
                                      teacher_fwd_frac=tt / el)))
                return
        print(f'ep {ep} loss {loss.item():.4f} val {evaluate(m, xva, yva):.2f} t {time.time() - t0:.0f}s', flush=True)
    wall = time.time() - t0
    res = dict(tag=a.tag, role=a.role, arch=a.arch, params=nparams(m), epochs=a.epochs, lr=a.lr, wd=a.wd,
               bs=a.bs, aug=a.aug, ls=a.ls, seed=a.seed, teacher=a.teacher, T=a.T, alpha=a.alpha,
               mixup=a.mixup, bank=a.bank, val=evaluate(m, xva, yva), test=evaluate(m, xte, yte),
               train_sub=evaluate(m, xtr[:6000], ytr[:6000]), wall=round(wall, 1),
               teacher_fwd_s=round(tt, 1))
    print(json.dumps(res), flush=True)
    with open(f'{R}/results.jsonl', 'a') as f:
        f.write(json.dumps(res) + '\n')
    if a.save:
        torch.save(dict(arch=(c1, c2, fc), sd=m.state_dict()), a.save)


if __name__ == '__main__':
    main()
