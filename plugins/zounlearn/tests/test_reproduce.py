import pytest


@pytest.mark.slow
def test_quick_reproduction_memorizes_and_matches_pre_attack_forgetting():
    """The quick run (minutes on a shared CPU): the model memorizes the facts, and every optimizer grade
    is stopped at the same forgetting target and compared after both attacks (claims report the directions)."""
    from gradkit_zounlearn.reproduce import run

    res = run(quick=True, progress=False)
    orig = res.rows[0]
    assert orig["optimizer"] == "original" and orig["forget_KM"] >= 0.9 and orig["retain_KM"] >= 0.9
    adamw = next(r for r in res.rows if r.get("optimizer") == "adamw")
    assert adamw["reached_target"] and adamw["forget_KM"] <= res.meta["config"]["target"]
    assert len(res.claims) == 10
    # the released model is on the int4 grid: quantizing it changes nothing
    assert orig["forget_KM_int4"] == orig["forget_KM"]
    # every optimizer was stopped by the same rule at the same forgetting target
    for r in res.rows:
        if r.get("optimizer") != "original" and r.get("seed") != "mean":
            assert r["reached_target"] and r["forget_KM"] <= res.meta["config"]["target"]
