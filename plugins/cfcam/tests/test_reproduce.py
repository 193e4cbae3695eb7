"""The quick reproduction end to end (slow: about a minute of CPU)."""

import pytest


@pytest.mark.slow
def test_quick_reproduction_runs_every_method_and_metric(tmp_path):
    from gradkit_cfcam.reproduce import METHODS, SIGMAS, run

    res = run(quick=True, progress=False, out=str(tmp_path))
    assert [p.name for p in res.save(tmp_path)] == ["cfcam.json", "cfcam.png"]
    datasets = {r["dataset"] for r in res.rows}
    assert datasets == {"lesions", "lesions/mid-layer", "digits"}
    assert len(res.rows) == 3 * len(METHODS)
    for r in res.rows:
        for key in ("avg_drop%", "avg_inc%", "deletion_auc", "insertion_auc", "class_diff", "latency_ms"):
            assert key in r
        if r["method"] not in ("score-cam", "ablation-cam"):
            assert all(f"ssim@{s:g}" in r for s in SIGMAS)
    claims = {c.text: c.passed for c in res.claims}
    assert claims["[lesions] the explained CNN is trained to >= 95% held-out accuracy"]
    assert claims["[digits] the explained CNN is trained to >= 95% held-out accuracy"]
    for ds in ("lesions", "lesions/mid-layer", "digits"):
        assert claims[f"[{ds}] CF-CAM's map is more stable than Grad-CAM's under raw-gradient noise at every sigma "
                      "(higher SSIM, lower MSE)"]
        assert claims[f"[{ds}] grad-cam: maps differ between the predicted and the runner-up class (mean |difference| > 0.02)"]
