"""Composition: `kd+fitnet` runs several methods over one shared forward and sums their terms.

    loss = w_ce * CE + sum over parts of each part's own distillation terms, with its own weights

The hard-label CE counts once, with the weight of the first part that has one (kd+fitnet: KD's
1 - alpha; fitnet+kd: FitNets' ce_weight). Every term is logged under its own name (a name two
parts share gets the part's prefix). A config key shared by parts (say feature_weight in at+sp)
applies to each of them.
"""
from kdkit.errors import KdkitError
from kdkit.methods.base import Method


class Composite(Method):
    def __init__(self, parts: dict[str, Method]):
        first = next(iter(parts.values()))
        super().__init__(first.student, first.teacher)
        for name, part in parts.items():
            if type(part).forward is not Method.forward:
                raise KdkitError(f"method {name} cannot be composed (it runs its own forward); use it alone")
            for child_name, child in part.named_children():
                if child is not part.student:  # adapters, memory banks; the student is registered once
                    self.add_module(f"{name}_{child_name}", child)
        self.__dict__["parts"] = parts  # not registered: the parts hold the student too
        self.student_layers = list(dict.fromkeys(n for p in parts.values() for n in p.student_layers))
        self.teacher_layers = list(dict.fromkeys(n for p in parts.values() for n in p.teacher_layers))

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        for part in self.parts.values():  # a part's own buffers (e.g. bkd's class weights) move too
            part.to(*args, **kwargs)
        return self

    def terms(self, s, t, y, index):
        out = {}
        for name, part in self.parts.items():
            part.epoch, part.mixing = self.epoch, self.mixing
            for key, term in part.terms(s, t, y, index).items():
                if key == "ce":
                    out.setdefault("ce", term)
                else:
                    out[f"{name}_{key}" if key in out else key] = term
        return out
