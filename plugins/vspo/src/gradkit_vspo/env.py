"""Synthetic tool-calling environment: a hidden knowledge base, a ``lookup`` tool, answer tags.

A question is ``<bos> Q ENTITY ATTRIBUTE``; the knowledge base (KB) maps (entity, attribute) to a value
the policy never sees in the prompt.  The policy may write ``<call> lookup E A </call>`` (at most
``max_calls`` times); the environment then appends ``<result> VALUE </result>`` (``none`` for an unknown
key) — those tokens are not the policy's and are masked out of the loss.  The episode ends at ``<eos>``
or after ``max_steps`` tokens.  Held-out questions are (entity, attribute) pairs never asked in training
(every entity token is seen), so only the tool, not a memorised value, answers them.  (The brief's 2-hop arithmetic questions are not built.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

SPECIALS = ["<pad>", "<bos>", "Q", "<call>", "</call>", "<result>", "</result>", "<answer>", "</answer>",
            "<eos>", "lookup", "none"]
ATTRIBUTES = ["color", "city", "sport", "food"]


@dataclass
class Rollouts:
    seq: torch.Tensor          # (N, L) token ids, prompt included
    policy_mask: torch.Tensor  # (N, L-1) 1 where token t+1 was written by the policy
    texts: List[str]
    prompt_ids: List[int]


class ToolKB:
    """The environment: ``n_entities`` x 4 attributes, ``n_values`` possible values, seeded."""

    def __init__(self, n_entities: int = 60, n_values: int = 24, heldout_fraction: float = 0.25, seed: int = 0,
                 max_calls: int = 2, max_steps: int = 18):
        if n_entities < 4 or n_values < 2:
            raise ValueError(f"need n_entities >= 4 and n_values >= 2, got {n_entities}, {n_values}")
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
        g = torch.Generator().manual_seed(seed)
        self.entities = [f"e{i}" for i in range(n_entities)]
        self.values = [f"v{i}" for i in range(n_values)]
        self.vocab = SPECIALS + self.entities + ATTRIBUTES + self.values
        self.tok = {w: i for i, w in enumerate(self.vocab)}
        table = torch.randint(n_values, (n_entities, len(ATTRIBUTES)), generator=g)
        self.kb = {(e, a): self.values[int(table[i, j])] for i, e in enumerate(self.entities)
                   for j, a in enumerate(ATTRIBUTES)}
        qs = [(e, a) for e in self.entities for a in ATTRIBUTES]
        self.questions = qs
        perm = torch.randperm(len(qs), generator=g).tolist()
        n_test = max(1, int(round(heldout_fraction * len(qs))))
        self.test_ids = sorted(perm[:n_test])
        self.train_ids = sorted(perm[n_test:])
        self.max_calls, self.max_steps = max_calls, max_steps
        self.prompt_len = 4

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def block_size(self) -> int:
        return self.prompt_len + self.max_steps

    def ref(self, qid: int) -> str:
        return self.kb[self.questions[qid]]

    def prompt(self, qid: int) -> List[int]:
        e, a = self.questions[qid]
        return [self.tok["<bos>"], self.tok["Q"], self.tok[e], self.tok[a]]

    def _tool(self, call_tokens: Sequence[str]) -> Optional[List[str]]:
        """Result tokens for a finished call span, or None when the span does not parse."""
        if len(call_tokens) != 3 or call_tokens[0] != "lookup":
            return None
        return ["<result>", self.kb.get((call_tokens[1], call_tokens[2]), "none"), "</result>"]

    def demo(self, qid: int, noise: float, g: torch.Generator) -> List[str]:
        """A (possibly noisy) demonstration: the policy+tool tokens after the prompt, ending in <eos>."""
        e, a = self.questions[qid]
        u = torch.rand(4, generator=g).tolist()
        ce = self.entities[int(torch.randint(len(self.entities), (1,), generator=g))] if u[0] < noise else e
        ca = ATTRIBUTES[int(torch.randint(4, (1,), generator=g))] if u[1] < noise else a
        out = ["<call>", "lookup", ce, ca, "</call>"] + self._tool(["lookup", ce, ca])
        ans = self.kb[(ce, ca)]
        if u[2] < noise:
            ans = self.values[int(torch.randint(len(self.values), (1,), generator=g))]
        if u[3] < noise / 2:
            return out + [ans, "<eos>"]                      # forgets the answer tags
        return out + ["<answer>", ans, "</answer>", "<eos>"]

    @torch.no_grad()
    def rollout(self, model, qids: Sequence[int], group_size: int = 1, *, greedy: bool = False,
                generator: Optional[torch.Generator] = None, temperature: float = 1.0) -> Rollouts:
        """Run ``group_size`` episodes per question id, in parallel; returns tokens, masks and texts."""
        qids = list(qids)
        if not qids:
            raise ValueError("rollout needs at least one question id")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        rows = [q for q in qids for _ in range(group_size)]
        n = len(rows)
        seq = torch.tensor([self.prompt(q) for q in rows], dtype=torch.long)
        pad, eos, close = self.tok["<pad>"], self.tok["<eos>"], self.tok["</call>"]
        pending: List[List[str]] = [[] for _ in range(n)]
        done = [False] * n
        calls = [0] * n
        gen_tokens: List[List[str]] = [[] for _ in range(n)]
        pol = torch.zeros(n, self.max_steps)
        for t in range(self.max_steps):
            logits = model(seq)[:, -1].float()
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=generator).squeeze(1)
            nxt = nxt.tolist()
            for i in range(n):
                if done[i]:
                    nxt[i] = pad
                    continue
                if pending[i]:
                    nxt[i] = self.tok[pending[i].pop(0)]
                    gen_tokens[i].append(self.vocab[nxt[i]])
                    continue
                pol[i, t] = 1.0
                w = self.vocab[nxt[i]]
                gen_tokens[i].append(w)
                if nxt[i] == eos:
                    done[i] = True
                elif nxt[i] == close and calls[i] < self.max_calls:
                    toks = gen_tokens[i]
                    start = max((k for k, x in enumerate(toks) if x == "<call>"), default=None)
                    res = self._tool(toks[start + 1:-1]) if start is not None else None
                    if res is not None:
                        calls[i] += 1
                        pending[i] = res
            seq = torch.cat([seq, torch.tensor(nxt).unsqueeze(1)], 1)
        texts = [" ".join(w for w in toks if w != "<eos>") for toks in gen_tokens]
        mask = torch.zeros(n, seq.shape[1] - 1)
        mask[:, self.prompt_len - 1:] = pol
        return Rollouts(seq=seq, policy_mask=mask, texts=texts, prompt_ids=rows)

    def encode_demo(self, qid: int, tokens: Sequence[str]):
        """Token ids and a policy mask (tool tokens masked) for a demonstration, padded to the block."""
        ids = self.prompt(qid) + [self.tok[w] for w in tokens]
        mask = [0] * (self.prompt_len - 1)
        inside = False
        for w in tokens:
            mask.append(0 if inside or w == "<result>" else 1)
            if w == "<result>":
                inside = True
            elif w == "</result>":
                inside = False
        ids = ids[: self.block_size]
        ids += [self.tok["<pad>"]] * (self.block_size - len(ids))
        mask = (mask + [0] * self.block_size)[: self.block_size - 1]
        return ids, mask


def token_logps(model, seq: torch.Tensor) -> torch.Tensor:
    """Per-position log-probability of the next token, shape ``(N, L-1)``."""
    logits = model(seq[:, :-1]).float()
    return torch.log_softmax(logits, -1).gather(-1, seq[:, 1:].unsqueeze(-1)).squeeze(-1)


def make_policy(env: ToolKB, seed: int = 0, d_model: int = 64, n_layer: int = 2, n_head: int = 4):
    """The support package's tiny GPT over the environment's word vocabulary."""
    from gradkit_support.models import TinyGPT
    torch.manual_seed(seed)
    return TinyGPT(vocab_size=env.vocab_size, block_size=env.block_size, d_model=d_model, n_layer=n_layer,
                   n_head=n_head)


def sft(model, env: ToolKB, *, n_demos: int = 200, noise: float = 0.3, steps: int = 150, batch: int = 32,
        lr: float = 3e-3, seed: int = 0):
    """Supervised warm start on ``n_demos`` noisy demonstrations over training questions."""
    g = torch.Generator().manual_seed(seed)
    qs = [env.train_ids[int(i)] for i in torch.randint(len(env.train_ids), (n_demos,), generator=g)]
    enc = [env.encode_demo(q, env.demo(q, noise, g)) for q in qs]
    ids = torch.tensor([e[0] for e in enc])
    mask = torch.tensor([e[1] for e in enc], dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(n_demos, (batch,), generator=g)
        lp = token_logps(model, ids[idx])
        loss = -(lp * mask[idx]).sum() / mask[idx].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
