"""A generated corpus of fictional facts for unlearning experiments (byte-level, nothing downloaded).

Each entity (a made-up name) has three attributes, each stated by one templated
sentence, e.g. ``"Velmora lives in Ostra."``.  Every attribute pool has 16 values with
distinct first letters, so the first byte of a value identifies it: the *KnowMem*
analogue is the model's top-1 accuracy on that byte (chance is about 1/16).
"""

from __future__ import annotations

import random
from typing import Dict, List

import torch

POOLS = {
    "city": ["Amsel", "Brask", "Corvo", "Dunmor", "Elvan", "Fenwick", "Galdor", "Harrow", "Istra", "Jorvik",
             "Kelso", "Lumen", "Morrow", "Norvig", "Ostra", "Pellin"],
    "job": ["archer", "baker", "cooper", "dyer", "engraver", "farrier", "glazier", "hunter", "inker", "jeweler",
            "knitter", "locksmith", "miller", "notary", "potter", "roofer"],
    "pet": ["alpaca", "beagle", "canary", "donkey", "eel", "ferret", "gecko", "hamster", "ibis", "jackdaw",
            "kitten", "lemur", "magpie", "newt", "otter", "parrot"],
}
TEMPLATES = {"city": "{e} lives in {v}.", "job": "{e} works as a {v}.", "pet": "{e} keeps a {v}."}
_SYL = ["ba", "ve", "lo", "mir", "ta", "zen", "ko", "ru", "sa", "dri", "nel", "qua", "fo", "gi", "hal", "pe",
        "xo", "yul", "wen", "cor"]


def entity_names(n: int, rng: random.Random) -> List[str]:
    names, seen = [], set()
    while len(names) < n:
        k = rng.choice((2, 3))
        name = "".join(rng.choice(_SYL) for _ in range(k)).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def fact_corpus(n_entities: int, length: int = 32, seed: int = 0) -> Dict[str, torch.Tensor]:
    """All facts of ``n_entities`` generated entities as padded byte rows.

    Returns ``input_ids`` (N, length) (padding with ``\\n``), ``loss_mask`` (real bytes),
    ``value_mask`` (the first byte of the attribute value: the KnowMem position), ``entity``
    (N,) entity index and ``attribute`` (N,) index into ``("city", "job", "pet")``.
    """
    if n_entities < 1:
        raise ValueError(f"n_entities must be >= 1, got {n_entities}")
    rng = random.Random(seed)
    names = entity_names(n_entities, rng)
    ids, lmask, vmask, ent, att = [], [], [], [], []
    for i, e in enumerate(names):
        for a, key in enumerate(POOLS):
            v = rng.choice(POOLS[key])
            s = TEMPLATES[key].format(e=e, v=v)
            b = s.encode()
            if len(b) > length:
                raise ValueError(f"fact {s!r} is longer than length={length}")
            pos = s.index(" " + v + ".") + 1
            row = torch.full((length,), ord("\n"), dtype=torch.long)
            row[: len(b)] = torch.tensor(list(b))
            lm = torch.zeros(length, dtype=torch.bool)
            lm[: len(b) + 1 if len(b) < length else len(b)] = True  # the first padding byte ends the sentence
            vm = torch.zeros(length, dtype=torch.bool)
            vm[pos] = True
            ids.append(row)
            lmask.append(lm)
            vmask.append(vm)
            ent.append(i)
            att.append(a)
    return {"input_ids": torch.stack(ids), "loss_mask": torch.stack(lmask), "value_mask": torch.stack(vmask),
            "entity": torch.tensor(ent), "attribute": torch.tensor(att)}


def answer_mask(data: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Loss mask of the answer: from the attribute value's first byte to the end of the sentence."""
    pos = data["value_mask"].float().argmax(1)
    ar = torch.arange(data["value_mask"].shape[1])[None]
    return (ar >= pos[:, None]) & data["loss_mask"]


def subset(data: Dict[str, torch.Tensor], index: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {k: v[index] for k, v in data.items()}


@torch.no_grad()
def knowmem(model, data: Dict[str, torch.Tensor], batch_size: int = 512) -> float:
    """Top-1 accuracy of the model on the attribute-value byte of each fact (teacher-forced), in [0, 1]."""
    from .objectives import _logits

    ids, vm = data["input_ids"], data["value_mask"]
    if len(ids) == 0:
        raise ValueError("knowmem of an empty fact set is undefined")
    was = model.training
    model.eval()
    hits = 0
    for i in range(0, len(ids), batch_size):
        x, m = ids[i : i + batch_size], vm[i : i + batch_size]
        pred = _logits(model, x).argmax(-1)
        # value byte at t is predicted at t-1
        ok = (pred[:, :-1] == x[:, 1:]) & m[:, 1:]
        hits += int(ok.sum())
    model.train(was)
    return hits / int(vm.sum())
