"""The quick reproduction end to end (slow: about a minute of CPU)."""

import pytest


@pytest.mark.slow
def test_quick_reproduction(tmp_path):
    from gradkit_cofrgenet.reproduce import MODELS_QUICK, run

    res = run(quick=True, out=tmp_path, progress=False)
    rows = {r["model"]: r for r in res.rows}
    assert set(rows) == set(MODELS_QUICK)
    assert 0.55 < rows["cffn"]["params_vs_4x"] < 0.65
    assert abs(rows["cffn"]["params"] - rows["ffn-narrow"]["params"]) < 0.001 * rows["cffn"]["params"]
    claims = {c.text.split(" (")[0]: c.passed for c in res.claims}
    assert claims["every run stays finite"]
    assert claims["Cffn is within 4 % of the 4x-FFN model's validation loss with fewer parameters"]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2 * len(MODELS_QUICK)
