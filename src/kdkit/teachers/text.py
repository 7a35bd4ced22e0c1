"""A teacher that reads its own tokenisation of each sentence (a Hugging Face teacher, hf:DIR, whose
tokenizer is not the data's): `TextTeacher`, a member of a HybridTeacher (docs/text.md).

The student's batches hold the student's ids, which the teacher cannot read. The teacher's view of
every sentence is tokenised once (data/text.py `text_view`); its outputs are computed once per split
on that view, and the distilled student gets them by row, as for saved outputs. Text is not
augmented, so these are exactly the outputs an online teacher would give.
"""
import torch

from kdkit.models.outputs import logits_of
from kdkit.teachers.sources import TorchTeacher

BATCH_SIZE = 256  # sentences per teacher forward


class TextTeacher(TorchTeacher):
    """A torch model over its own ids of the sentences; outputs per split, computed once, by row."""

    kind = "text"
    index_keyed = True

    def __init__(self, model, tokenizer, sentences: list[str], classes=None, name: str | None = None):
        super().__init__(model, classes, name)
        self.tokenizer = tokenizer
        self.ids = tokenizer.encode(sentences)  # (S, L) the teacher's ids of every sentence

    @torch.no_grad()
    def split_table(self, split, split_name: str) -> torch.Tensor:
        """(N, K) float32 log-probabilities of the split's sentences (its `index` rows), on CPU."""
        ids = self.ids.index_select(0, split.index)  # (N, L)
        order = (ids != self.tokenizer.pad_id).sum(dim=1).argsort(stable=True)  # (N,) shortest first: a
        device, parts = self.device(), []                                        # batch is as long as its longest
        for start in range(0, len(ids), BATCH_SIZE):
            batch = ids[order[start:start + BATCH_SIZE]].to(device)
            logits = logits_of(self.model(batch), f"teacher '{self.name}'", len(batch))  # (B, K)
            parts.append(logits.float().log_softmax(dim=1).cpu())
        if not parts:
            return torch.empty(0, 0)
        table = torch.cat(parts)  # (N, K) in `order`
        return table[order.argsort()]  # (N, K) in the split's order
