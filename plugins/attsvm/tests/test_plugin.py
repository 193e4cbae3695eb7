"""Registration (no heavy imports at discovery) and the reproduction's claims (slow)."""

import subprocess
import sys

import pytest

import gradkit_core as gk


def test_components_are_registered_under_their_kinds():
    assert gk.info("att-svm", kind="solvers").target == "gradkit_attsvm.svm:AttSVM"
    assert gk.info("normalized-gd", kind="optimizers").target == "gradkit_attsvm.optim:NormalizedGD"
    assert gk.info("attsvm", kind="reproductions").target == "gradkit_attsvm.reproduce:run"
    assert gk.info("attsvm", kind="benchmarks").target == "gradkit_attsvm.bench:run"


def test_entry_point_module_imports_neither_torch_nor_cvxpy():
    code = "import sys, gradkit_attsvm; print('torch' in sys.modules, 'cvxpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.slow
def test_quick_reproduction_claims_hold(tmp_path):
    from gradkit_attsvm.reproduce import run

    res = run(quick=True, out=str(tmp_path), progress=False)
    failed = [c.text for c in res.claims if not c.passed]
    assert not failed, failed
    assert (tmp_path / "attsvm.json").exists()
