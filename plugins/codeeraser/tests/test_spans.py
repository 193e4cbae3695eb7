import random

import pytest
import torch

from gradkit_codeeraser.data import make_secret, secret_samples
from gradkit_codeeraser.spans import (
    encode_bytes,
    encode_with_secret_mask,
    merge_spans,
    secret_spans,
    spans_to_token_mask,
)


def _spans_text(text, spans):
    return [text[a:b] for a, b in spans]


def test_each_detector_finds_exactly_its_secret():
    text = ('x = 1\nAWS = "AKIAABCDEFGHIJ012345"\nmail = "jane.doe@corp.example"\n'
            'HOST = "203.0.113.7"\nh = "0123456789abcdef0123456789abcdef"\napi_key = "s3cr3t-Value_99"\n')
    got = _spans_text(text, secret_spans(text, detectors=("email", "ipv4", "aws_key", "api_key", "hex")))
    assert got == ["AKIAABCDEFGHIJ012345", "jane.doe@corp.example", "203.0.113.7",
                   "0123456789abcdef0123456789abcdef", "s3cr3t-Value_99"]
    assert _spans_text(text, secret_spans(text, detectors=("ipv4",))) == ["203.0.113.7"]


def test_plain_code_has_no_secrets():
    text = "def f(self, x):\n    self.lineno = 1\n    return version(1, 2, 3)  # see 1.2.3.4.5 and v0.9\n"
    assert secret_spans(text) == []


def test_detect_secrets_keyword_plugin_finds_password():
    text = 'db_password = "hunter2horse"\n'
    spans = secret_spans(text, detectors=("detect_secrets",))
    assert _spans_text(text, spans) == ["hunter2horse"]


def test_unknown_detector_and_bad_text():
    with pytest.raises(ValueError, match="unknown detector"):
        secret_spans("x", detectors=("phone",))
    with pytest.raises(TypeError, match="str"):
        secret_spans(b"bytes")


def test_merge_spans():
    assert merge_spans([(5, 8), (0, 2), (1, 3), (8, 9), (4, 4)]) == [(0, 3), (5, 9)]


def test_bpe_token_straddling_a_secret_is_covered():
    # tokens: "key", "=\"AK", "IA12", "34\"", "<pad>"; secret = chars 6..12 ("AKIA1234"? here 6..14)
    offsets = [(0, 3), (3, 8), (8, 12), (12, 15), (0, 0)]
    mask = spans_to_token_mask(offsets, [(6, 14)])
    assert mask.tolist() == [False, True, True, True, False]
    # no spans: nothing marked; a span inside one token marks only it
    assert not spans_to_token_mask(offsets, []).any()
    assert spans_to_token_mask(offsets, [(9, 10)]).tolist() == [False, False, True, False, False]


def test_bad_offsets_shape():
    with pytest.raises(ValueError, match="offsets"):
        spans_to_token_mask([1, 2, 3], [(0, 1)])


def test_byte_offsets_of_multibyte_characters():
    text = 'é="1.2.3.4"'
    ids, offsets = encode_bytes(text)
    assert bytes(ids.tolist()) == text.encode("utf-8")
    assert offsets[:3] == [(0, 1), (0, 1), (1, 2)]
    mask = spans_to_token_mask(offsets, secret_spans(text))
    assert bytes(ids[mask].tolist()) == b"1.2.3.4"


class _FakeFastTokenizer:
    """Splits on a fixed 3-character grid like a BPE that ignores word boundaries; BOS (0, 0) first."""

    def __call__(self, texts, padding=True, return_tensors="pt", return_offsets_mapping=False, **kw):
        ids, offs = [], []
        for t in texts:
            o = [(0, 0)] + [(i, min(i + 3, len(t))) for i in range(0, len(t), 3)]
            ids.append([1] + [10 + hash(t[a:b]) % 50 for a, b in o[1:]])
            offs.append(o)
        n = max(map(len, ids))
        att = [[1] * len(i) + [0] * (n - len(i)) for i in ids]
        ids = [i + [0] * (n - len(i)) for i in ids]
        offs = [o + [(0, 0)] * (n - len(o)) for o in offs]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(att),
                "offset_mapping": torch.tensor(offs)}


def test_hf_style_encoding_covers_secret_tokens_fully():
    texts = ['ip = "10.20.30.40"', "nothing here"]
    enc = encode_with_secret_mask(_FakeFastTokenizer(), texts)
    assert set(enc) == {"input_ids", "attention_mask", "forget_mask"}
    m = enc["forget_mask"]
    # chars 6..17 are the IP: grid tokens [6,9), [9,12), [12,15), [15,18) -> token indices 3..6 (after BOS)
    assert m[0].nonzero().flatten().tolist() == [3, 4, 5, 6]
    assert not m[1].any()
    assert not (m & (enc["attention_mask"] == 0)).any()


def test_injected_secrets_are_detected_and_fully_covered():
    src = ("def f(x):\n    return x\n" * 400).encode()
    d = secret_samples(src, 8, 64, seed=0)
    assert d["input_ids"].shape == (8, 64)
    # detection alone covers every injected secret byte
    assert not (d["true_mask"] & ~d["detected_mask"]).any()
    for ids, tm in zip(d["input_ids"], d["true_mask"]):
        s = bytes(ids[tm].tolist()).decode()
        assert s and '"' not in s


def test_secret_generators_formats():
    rng = random.Random(0)
    assert secret_spans(make_secret("aws_key", rng), ("aws_key",)) == [(0, 20)]
    e = make_secret("email", rng)
    assert e.endswith("@corp.example") and secret_spans(e, ("email",)) == [(0, len(e))]
    ip = make_secret("ipv4", rng)
    assert secret_spans(ip, ("ipv4",)) == [(0, len(ip))]
    h = make_secret("hex", rng)
    assert len(h) == 32 and secret_spans(h, ("hex",)) == [(0, 32)]
    with pytest.raises(ValueError, match="kind"):
        make_secret("ssn", rng)


# every secret type the README claims, on strings written for this test: the whole secret is masked
_SECRETS = {
    "email": ('owner = "jane.doe@corp.example"\n', "jane.doe@corp.example"),
    "ipv4": ('DB_HOST = "203.0.113.77"\n', "203.0.113.77"),
    "aws_key": ('AWS = "AKIAQWERTYUIOPASDFGH"\n', "AKIAQWERTYUIOPASDFGH"),
    "api_key": ('api_key = "s3cr3t-Value_99"\n', "s3cr3t-Value_99"),
    "hex": ('h = "0123456789abcdef0123456789abcdef"\n', "0123456789abcdef0123456789abcdef"),
    "private_key": ("k = '''-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1b2c3d4\nAbCdEf0123\n"
                    "-----END RSA PRIVATE KEY-----'''\n",
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1b2c3d4\nAbCdEf0123\n-----END RSA PRIVATE KEY-----"),
    "github": ('tok = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"\n', "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
    "gitlab": ('x = "glpat-Ab3dEf6hIj9lMn2pQr5t"\n', "glpat-Ab3dEf6hIj9lMn2pQr5t"),
    "jwt": ('auth = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJuIjo3fQ.Zm9vYmFyYmF6cXV4X3NpZ25hdHVyZV8xMjM0"\n',
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJuIjo3fQ.Zm9vYmFyYmF6cXV4X3NpZ25hdHVyZV8xMjM0"),
    "slack": ('hook = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"\n',
              "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    "stripe": ('k = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"\n', "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    "openai": ('k = "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"\n',
               "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"),
    "sendgrid": ('k = "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"\n',
                 "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"),
    "npm": ("//registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789\n",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    "twilio": ('sid = "AC0123456789abcdef0123456789abcdef"\n', "AC0123456789abcdef0123456789abcdef"),
    "discord": ('bot = "MTE5NzQ2ODQxNzY1MTU2MDUxMg.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789ab"\n',
                "MTE5NzQ2ODQxNzY1MTU2MDUxMg.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789ab"),
    "basic_auth": ('url = "https://admin:S3cretPassw0rd@db.example.com/x"\n', "S3cretPassw0rd"),
}


@pytest.mark.parametrize("kind", sorted(_SECRETS))
def test_each_secret_type_is_masked_whole(kind):
    """Every character of the secret is inside a span (detect-secrets' GitHub detector reports only
    'ghp'; the rest of the token used to be trained with descent as context)."""
    text, secret = _SECRETS[kind]
    i = text.index(secret)
    spans = secret_spans(text)
    covered = [any(a <= j < b for a, b in spans) for j in range(i, i + len(secret))]
    assert all(covered), f"{kind}: only {sum(covered)}/{len(secret)} characters masked: {_spans_text(text, spans)}"
    ids, mask = __import__("gradkit_codeeraser.spans", fromlist=["byte_secret_mask"]).byte_secret_mask(text)
    assert mask[i : i + len(secret)].all()


def test_look_alikes_are_not_secrets():
    """A version-like dotted quad and a bare 40-hex git SHA are not flagged; a 40-hex value assigned
    to a token-like name still is."""
    for text in ('__version__ = "1.2.3.4"\n', "VERSION = (1, 2)  # release 10.0.0.1\n",
                 'rev = "3f786850e387550fdab836ed7e6dc881de23001b"\n'):
        assert secret_spans(text) == [], text
    text = 'api_token = "3f786850e387550fdab836ed7e6dc881de23001b"\n'
    assert _spans_text(text, secret_spans(text)) == ["3f786850e387550fdab836ed7e6dc881de23001b"]
    text = 'HOST = "10.0.0.1"\n'
    assert _spans_text(text, secret_spans(text)) == ["10.0.0.1"]
