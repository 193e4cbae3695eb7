import pytest


@pytest.mark.slow
def test_quick_reproduction_memorizes_and_matches_pre_attack_forgetting():
    """The quick run (minutes on a shared CPU): the model memorizes the facts, and every optimizer grade
    that reaches the forgetting target is compared after both attacks (claims report the directions)."""
    from gradkit_zounlearn.reproduce import run

    res = run(quick=True, progress=False)
    orig = res.rows[0]
    assert orig["optimizer"] == "original" and orig["forget_KM"] >= 0.9 and orig["retain_KM"] >= 0.9
    adamw = next(r for r in res.rows if r.get("optimizer") == "adamw")
    assert adamw["reached_target"] and adamw["forget_KM"] <= res.meta["config"]["target"]
    assert len(res.claims) == 8
