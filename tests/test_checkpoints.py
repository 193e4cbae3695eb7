"""gradkit_core.checkpoints: safe checkpoint reading and env-id verification for agents."""

import pytest


def test_checkpoint_reader_refuses_empty_truncated_foreign_and_unsafe_files(tmp_path):
    import torch

    from gradkit_core.checkpoints import read_checkpoint, verified_env_id

    good = tmp_path / "good.pt"
    torch.save({"format": "f/1", "a": torch.ones(2)}, good)
    assert torch.equal(read_checkpoint(good, "f/1", ["a"], "x")["a"], torch.ones(2))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:40])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "f/1", "a": Evil()}, tmp_path / "evil.pt")
    for name, match in (("empty.pt", "empty"), ("cut.pt", "truncated or corrupt"), ("evil.pt", "safe loader")):
        with pytest.raises(ValueError, match=match):
            read_checkpoint(tmp_path / name, "f/1", ["a"], "x")
    with pytest.raises(ValueError, match="expected format 'g/1'"):
        read_checkpoint(good, "g/1", [], "x")
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['b'\]"):
        read_checkpoint(good, "f/1", ["a", "b"], "x")
    with pytest.raises(ValueError, match="names a module to import"):
        verified_env_id("os:Evil-v0", good)
    with pytest.raises(ValueError, match="not a registered gymnasium id"):
        verified_env_id("NoSuchEnv-v9", good)
    assert verified_env_id("Pendulum-v1", good) == "Pendulum-v1"
