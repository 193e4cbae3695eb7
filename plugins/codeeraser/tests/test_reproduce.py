import pytest


@pytest.mark.slow
def test_quick_reproduction_direction():
    """Quick run (a few minutes on a shared CPU): the model memorizes the injected secrets, GA / CU /
    CodeEraser erase them below the unseen-secret threshold, CodeEraser keeps context MA above GA's."""
    from gradkit_codeeraser.reproduce import run

    res = run(quick=True, progress=False)
    rows = {r["method"]: r for r in res.rows}
    assert rows["original"]["secret_MA"] > res.meta["threshold_MA"] + 0.3
    for m in ("ga", "lm-cu", "codeeraser"):
        assert rows[m]["below_threshold"]
    assert rows["codeeraser"]["context_MA"] > rows["ga"]["context_MA"]
