"""Token ids through a torch Dataset: sentences of word ids (ragged, padded by kdkit with 0), an
nn.Embedding teacher trained in plain PyTorch, distilled into a smaller nn.Embedding student. The
ids stay integers end to end (kind "tokens": never made float, never normalised).

    python examples/text_ids_dataset.py
"""
import torch
from torch import nn
from torch.utils.data import Dataset

import kdkit

VOCAB, CLASSES = 500, 4


class Sentences(Dataset):
    """Hugging Face-style samples: {"input_ids": (L,) int64, "label": int}, lengths 5..20. A class
    is told by which of its 20 cue words the sentence holds, among random filler words."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.samples = []
        for _ in range(n):
            label = int(torch.randint(0, CLASSES, (1,), generator=g))
            length = int(torch.randint(5, 21, (1,), generator=g))
            ids = torch.randint(100, VOCAB, (length,), generator=g)  # filler
            cues = torch.randint(0, 20, (2,), generator=g) + 1 + 20 * label  # ids 1..80: 20 cue words per class
            ids[torch.randperm(length, generator=g)[:2]] = cues
            self.samples.append({"input_ids": ids, "label": label})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


class BagOfEmbeddings(nn.Module):
    """Mean of the word embeddings (padding id 0 left out), then a linear layer."""

    def __init__(self, dim: int, hidden: int = 0):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES)) if hidden else nn.Linear(dim, CLASSES)

    def forward(self, ids):  # (B, L) int64
        mask = (ids != 0).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, dim)
        return self.head(pooled)


def _padded(dataset):
    ids = nn.utils.rnn.pad_sequence([s["input_ids"] for s in dataset], batch_first=True)  # (N, L), 0 = padding
    return ids, torch.tensor([s["label"] for s in dataset])


def main(epochs: int = 20):
    train, val, test = Sentences(1200, 0), Sentences(300, 1), Sentences(300, 2)
    torch.manual_seed(0)
    teacher = BagOfEmbeddings(64, hidden=128)  # trained the plain way, on the user's side
    ids, labels = _padded(train)
    optimizer = torch.optim.Adam(teacher.parameters(), 1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(ids), labels).backward()
        optimizer.step()
    result = kdkit.distill(teacher, BagOfEmbeddings(16), train, val, test=test, epochs=epochs, batch_size=64,
                           lr=1e-2, optimizer="adamw", temperature=2.0, alpha=0.5, seeds=[0])
    print(result.table)
    return result


if __name__ == "__main__":
    main()
