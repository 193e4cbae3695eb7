"""Synthetic tool-calling environment: a hidden knowledge base, a ``lookup`` tool, answer tags.

A question is ``<bos> Q ENTITY ATTRIBUTE``; the knowledge base (KB) maps (entity, attribute) to a value
the policy never sees in the prompt.  The policy may write ``<call> lookup E A </call>`` (at most
``max_calls`` times); the environment then appends ``<result> VALUE </result>`` (``none`` for an unknown
key) — those tokens are not the policy's and are masked out of the loss.  The episode ends at ``<eos>``
or after ``max_steps`` tokens.  Held-out questions are (entity, attribute) pairs never asked in training
(every entity token is seen), so only the tool, not a memorised value, answers them.

**2-hop arithmetic questions** (``n_two_hop`` > 0, the default mix): ``<bos> sum E1 E2 A`` with a numeric
attribute ``A`` (``age`` or ``size``, values ``0``..``4``) asks for ``KB[E1, A] + KB[E2, A]`` (``0``..``8``):
two lookups, then an addition.  A 2-hop episode::

    <call> lookup E1 A </call> <result> x </result> <call> lookup E2 A </call> <result> y </result>
    <answer> x+y </answer> <eos>

The expected calls of a 2-hop question are both keys, so PRS's tool stage (gate 1) stays locked after one
lookup.  One-hop prompts are left-padded with ``<pad>`` to the 2-hop prompt length when both kinds are present;
a 25% held-out split is drawn separately for each kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

SPECIALS = ["<pad>", "<bos>", "Q", "<call>", "</call>", "<result>", "</result>", "<answer>", "</answer>",
            "<eos>", "lookup", "none"]
ATTRIBUTES = ["color", "city", "sport", "food"]
NUMERIC = ["age", "size"]          # numeric attributes (values 0..N_DIGITS-1), asked only by 2-hop questions
N_DIGITS = 5


@dataclass
class Rollouts:
    seq: torch.Tensor          # (N, L) token ids, prompt included
    policy_mask: torch.Tensor  # (N, L-1) 1 where token t+1 was written by the policy
    texts: List[str]
    prompt_ids: List[int]


class ToolKB:
    """The environment: ``n_entities`` x 4 attributes, ``n_values`` possible values, seeded."""

    def __init__(self, n_entities: int = 60, n_values: int = 24, heldout_fraction: float = 0.25, seed: int = 0,
                 max_calls: int = 2, max_steps: Optional[int] = None, n_two_hop: int = 80):
        if n_entities < 4 or n_values < 2:
            raise ValueError(f"need n_entities >= 4 and n_values >= 2, got {n_entities}, {n_values}")
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
        if not isinstance(n_two_hop, int) or isinstance(n_two_hop, bool) or n_two_hop < 0:
            raise ValueError(f"n_two_hop must be an int >= 0, got {n_two_hop!r}")
        n_pairs = n_entities * (n_entities - 1) * len(NUMERIC)
        if n_two_hop > n_pairs:
            raise ValueError(f"n_two_hop={n_two_hop} exceeds the {n_pairs} distinct 2-hop questions of {n_entities} entities")
        if n_two_hop and max_calls < 2:
            raise ValueError(f"2-hop questions need max_calls >= 2 (two lookups), got {max_calls}")
        g = torch.Generator().manual_seed(seed)
        self.entities = [f"e{i}" for i in range(n_entities)]
        self.values = [f"v{i}" for i in range(n_values)]
        self.two_hop = n_two_hop > 0
        self.numbers = [str(i) for i in range(2 * N_DIGITS - 1)] if self.two_hop else []
        extra = (["sum"] + NUMERIC + self.numbers) if self.two_hop else []
        self.vocab = SPECIALS + self.entities + ATTRIBUTES + self.values + extra
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocabulary words collide")
        self.tok = {w: i for i, w in enumerate(self.vocab)}
        table = torch.randint(n_values, (n_entities, len(ATTRIBUTES)), generator=g)
        self.kb = {(e, a): self.values[int(table[i, j])] for i, e in enumerate(self.entities)
                   for j, a in enumerate(ATTRIBUTES)}
        qs = [(e, a) for e in self.entities for a in ATTRIBUTES]
        perm = torch.randperm(len(qs), generator=g).tolist()
        n_test = max(1, int(round(heldout_fraction * len(qs))))
        self.test_ids = sorted(perm[:n_test])
        self.train_ids = sorted(perm[n_test:])
        if self.two_hop:  # drawn after the 1-hop split: the 1-hop KB and split are those of n_two_hop=0
            num = torch.randint(N_DIGITS, (n_entities, len(NUMERIC)), generator=g)
            self.kb.update({(e, a): str(int(num[i, j])) for i, e in enumerate(self.entities)
                            for j, a in enumerate(NUMERIC)})
            chosen, seen = [], set()
            while len(chosen) < n_two_hop:
                i, j = torch.randint(n_entities, (2,), generator=g).tolist()
                a = NUMERIC[int(torch.randint(len(NUMERIC), (1,), generator=g))]
                key = ("sum", self.entities[i], self.entities[j], a)
                if i != j and key not in seen:
                    seen.add(key)
                    chosen.append(key)
            base = len(qs)
            qs = qs + chosen
            perm2 = torch.randperm(n_two_hop, generator=g).tolist()
            n_test2 = max(1, int(round(heldout_fraction * n_two_hop)))
            self.test_ids = sorted(self.test_ids + [base + k for k in perm2[:n_test2]])
            self.train_ids = sorted(self.train_ids + [base + k for k in perm2[n_test2:]])
        self.questions = qs
        self.max_calls = max_calls
        self.max_steps = (22 if self.two_hop else 18) if max_steps is None else max_steps
        self.prompt_len = 5 if self.two_hop else 4

    def is_two_hop(self, qid: int) -> bool:
        return len(self.questions[qid]) == 4

    def expected_call(self, qid: int):
        """The key a 1-hop question needs, ``(E, A)``; for a 2-hop question both keys, ``((E1, A), (E2, A))``."""
        q = self.questions[qid]
        if len(q) == 4:
            return ((q[1], q[3]), (q[2], q[3]))
        return q

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def block_size(self) -> int:
        return self.prompt_len + self.max_steps

    def ref(self, qid: int) -> str:
        q = self.questions[qid]
        if len(q) == 4:
            return str(int(self.kb[(q[1], q[3])]) + int(self.kb[(q[2], q[3])]))
        return self.kb[q]

    def prompt(self, qid: int) -> List[int]:
        q = self.questions[qid]
        words = ["<bos>", "sum", q[1], q[2], q[3]] if len(q) == 4 else ["<bos>", "Q", q[0], q[1]]
        return [self.tok["<pad>"]] * (self.prompt_len - len(words)) + [self.tok[w] for w in words]

    def _tool(self, call_tokens: Sequence[str]) -> Optional[List[str]]:
        """Result tokens for a finished call span, or None when the span does not parse."""
        if len(call_tokens) != 3 or call_tokens[0] != "lookup":
            return None
        return ["<result>", self.kb.get((call_tokens[1], call_tokens[2]), "none"), "</result>"]

    def _noisy_key(self, e: str, a: str, noise: float, g: torch.Generator, attrs: Sequence[str]):
        u = torch.rand(2, generator=g).tolist()
        ce = self.entities[int(torch.randint(len(self.entities), (1,), generator=g))] if u[0] < noise else e
        ca = attrs[int(torch.randint(len(attrs), (1,), generator=g))] if u[1] < noise else a
        return ce, ca

    def _call(self, e: str, a: str) -> List[str]:
        return ["<call>", "lookup", e, a, "</call>"] + self._tool(["lookup", e, a])

    def demo(self, qid: int, noise: float, g: torch.Generator) -> List[str]:
        """A (possibly noisy) demonstration: the policy+tool tokens after the prompt, ending in <eos>."""
        q = self.questions[qid]
        if len(q) == 4:
            return self._demo_two_hop(q, noise, g)
        e, a = q
        ce, ca = self._noisy_key(e, a, noise, g, ATTRIBUTES)
        u = torch.rand(2, generator=g).tolist()
        out = self._call(ce, ca)
        ans = self.kb[(ce, ca)]
        if u[0] < noise:
            ans = self.values[int(torch.randint(len(self.values), (1,), generator=g))]
        if u[1] < noise / 2:
            return out + [ans, "<eos>"]                      # forgets the answer tags
        return out + ["<answer>", ans, "</answer>", "<eos>"]

    def _demo_two_hop(self, q, noise: float, g: torch.Generator) -> List[str]:
        _, e1, e2, a = q
        k1 = self._noisy_key(e1, a, noise / 2, g, NUMERIC)
        k2 = self._noisy_key(e2, a, noise / 2, g, NUMERIC)
        u = torch.rand(3, generator=g).tolist()
        out = self._call(*k1)
        one_lookup = u[0] < noise / 2                       # stops after one lookup and guesses
        if not one_lookup:
            out += self._call(*k2)
        r1, r2 = self.kb.get(k1, "none"), self.kb.get(k2, "none")
        if one_lookup or not (r1.isdigit() and r2.isdigit()) or u[1] < noise / 2:
            ans = self.numbers[int(torch.randint(len(self.numbers), (1,), generator=g))]
        else:
            ans = str(int(r1) + int(r2))
        if u[2] < noise / 4:
            return out + [ans, "<eos>"]
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
        next_logits = getattr(model, "next_logits", None)  # a KV-cached LM policy (gradkit_vspo.llm)
        if next_logits is not None:
            model.reset_cache()
        for t in range(self.max_steps):
            logits = (next_logits(seq) if next_logits is not None else model(seq)[:, -1]).float()
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
        if next_logits is not None:
            model.reset_cache()
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
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters (every requires_grad is False)")
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        idx = torch.randint(n_demos, (batch,), generator=g)
        lp = token_logps(model, ids[idx])
        loss = -(lp * mask[idx]).sum() / mask[idx].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
