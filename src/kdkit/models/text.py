"""Small text classifiers over token ids (B, L) int64, the students of a transformer teacher (docs/text.md).

    bag-of-ngrams  fastText (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"): the
                   mean of the word embeddings and of hashed n-gram embeddings, then one linear layer
    bilstm         Tang et al. 2019 ("Distilling Task-Specific Knowledge from BERT into Simple Neural
                   Networks"): one bidirectional LSTM layer, max-pooled over time, a linear head
    textcnn        Kim 2014 ("Convolutional Neural Networks for Sentence Classification"): 1-D
                   convolutions of widths 3, 4 and 5, max-pooled over time, a linear head

Each is sized by `vocab_size`, which kdkit passes from the data (the tokenizer's ids), and takes
`embed_dim`; `pad_id` is the padding id (kdkit's words and BERT's tokenizers use 0). in_channels and
image_size (the sequence length, 1) are taken and ignored, as every registered factory takes them.
"""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

NGRAM_PRIME = 1_000_003  # the multiplier of the n-gram hash


class BagOfNgrams(nn.Module):
    """Mean of word and hashed n-gram embeddings, then a linear layer."""

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 64, ngrams: int = 2,
                 buckets: int = 50_000, pad_id: int = 0):
        super().__init__()
        self.vocab_size, self.ngrams, self.buckets, self.pad_id = vocab_size, ngrams, buckets, pad_id
        # rows 0..vocab_size-1: words; then one row per n-gram bucket
        self.embedding = nn.Embedding(vocab_size + (buckets if ngrams > 1 else 0), embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.feature_modules = ["embedding"]

    def grams(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L') ids of the words and of every n-gram of 2..ngrams words (rows of `embedding`), and
        (B, L') whether each is real (no padding inside)."""
        real = ids != self.pad_id  # (B, L)
        all_ids, all_real = [ids], [real]
        length = ids.shape[1]
        for n in range(2, self.ngrams + 1):
            if length < n:
                break
            code = torch.zeros_like(ids[:, :length - n + 1])  # (B, L - n + 1)
            inside = torch.ones_like(real[:, :length - n + 1])
            for k in range(n):
                code = torch.remainder(code * NGRAM_PRIME + ids[:, k:length - n + 1 + k], self.buckets)
                inside = inside & real[:, k:length - n + 1 + k]
            all_ids.append(code + self.vocab_size)
            all_real.append(inside)
        return torch.cat(all_ids, dim=1), torch.cat(all_real, dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        grams, real = self.grams(ids)  # (B, L')
        weights = real.to(self.embedding.weight.dtype).unsqueeze(-1)  # (B, L', 1)
        summed = (self.embedding(grams) * weights).sum(dim=1)  # (B, D)
        return self.head(summed / weights.sum(dim=1).clamp(min=1.0))  # (B, K)


class BiLSTM(nn.Module):
    """Embedding, one bidirectional LSTM layer, max over time (padding left out), a linear head.

    Ids are right-padded; each sentence is packed to its length, so its backward direction starts at
    its last word and its output is the same in any batch, whatever the padding. An exported graph
    (ONNX, tracing) cannot pack: it reads the padding, and agrees with PyTorch on inputs padded alike."""

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 64, hidden: int = 128, pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id if 0 <= pad_id < vocab_size else None)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, num_classes)
        self.feature_modules = ["embedding"]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = (ids != self.pad_id).unsqueeze(-1)  # (B, L, 1)
        embedded = self.embedding(ids)  # (B, L, E)
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # export: one fixed graph, padding read
            states, _ = self.lstm(embedded)  # (B, L, 2H)
        else:  # each sentence read to its own end (right padding): the backward pass starts at its last word
            lengths = real.squeeze(-1).sum(dim=1).clamp(min=1).cpu()  # (B,)
            packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=ids.shape[1])
        pooled = states.masked_fill(~real, -1e4).amax(dim=1)  # (B, 2H)
        pooled = torch.where(real.any(dim=1), pooled, torch.zeros_like(pooled))  # a sentence of padding only: 0
        return self.head(pooled)  # (B, K)


class TextCNN(nn.Module):
    """Embedding, convolutions of widths 3, 4, 5 (ReLU, max over time), dropout, a linear head."""

    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 64, channels: int = 100,
                 widths: tuple = (3, 4, 5), dropout: float = 0.5, pad_id: int = 0):
        super().__init__()
        self.pad_id, self.widths = pad_id, tuple(widths)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id if 0 <= pad_id < vocab_size else None)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(self.widths), num_classes)
        self.feature_modules = ["embedding"] + [f"convs.{i}" for i in range(len(self.widths))]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        short = max(self.widths) - ids.shape[1]
        if short > 0:  # shorter than the widest filter: pad on the right
            ids = nn.functional.pad(ids, (0, short), value=self.pad_id)
        x = self.embedding(ids).transpose(1, 2)  # (B, D, L)
        pooled = [conv(x).relu().amax(dim=2) for conv in self.convs]  # each (B, C)
        return self.head(self.dropout(torch.cat(pooled, dim=1)))  # (B, K)


def bag_of_ngrams(num_classes: int, in_channels: int = 1, image_size: int = 1, vocab_size: int = 30_002,
                  embed_dim: int = 64, ngrams: int = 2, buckets: int = 50_000, pad_id: int = 0) -> BagOfNgrams:
    """fastText-like bag of word and hashed n-gram embeddings, linear head (token ids)"""
    return BagOfNgrams(num_classes, vocab_size, embed_dim, ngrams, buckets, pad_id)


def bilstm(num_classes: int, in_channels: int = 1, image_size: int = 1, vocab_size: int = 30_002,
           embed_dim: int = 64, hidden: int = 128, pad_id: int = 0) -> BiLSTM:
    """1-layer BiLSTM, max-pooled over time, linear head (token ids)"""
    return BiLSTM(num_classes, vocab_size, embed_dim, hidden, pad_id)


def textcnn(num_classes: int, in_channels: int = 1, image_size: int = 1, vocab_size: int = 30_002,
            embed_dim: int = 64, channels: int = 100, dropout: float = 0.5, pad_id: int = 0) -> TextCNN:
    """1-D CNN of widths 3, 4, 5, max-pooled over time, linear head (token ids)"""
    return TextCNN(num_classes, vocab_size, embed_dim, channels, (3, 4, 5), dropout, pad_id)
