"""`gradkit reproduce` / `bench` plumbing and Result output, with an in-memory plugin."""

import json
import types

import pytest

import gradkit_core as gk
from gradkit_core import cli, hookimpl
from gradkit_core.registry import Registry
from gradkit_core.results import Result, format_table

CALLS = []


def fake_repro(*, quick=False, out=None, seed=0, progress=True):
    CALLS.append(dict(quick=quick, seed=seed, out=out))
    res = Result("toy", title="toy reproduction")
    res.add_row(method="ours", score=0.91)
    res.add_row(method="baseline", score=0.85)
    res.add_claim("ours beats the baseline", True, "0.91 vs 0.85")
    res.add_claim("a claim that does not hold", quick is False)
    res.add_curve("loss", "ours", [0, 1, 2], [1.0, 0.5, 0.25])
    return res


def not_a_result(**kw):
    return {"score": 1}


@pytest.fixture
def toy_registry(monkeypatch):
    mod = types.ModuleType("toyplug")
    mod.PLUGIN_API_VERSION = 1

    def gradkit_register_reproductions(register):
        register("toy", fake_repro, summary="toy")
        register("bad", not_a_result)

    mod.gradkit_register_reproductions = hookimpl(gradkit_register_reproductions)

    class EP:
        name, value, dist = "toyplug", "toyplug", None

        def load(self):
            return mod

    reg = Registry([EP()])
    monkeypatch.setattr(gk, "_registry", reg)
    CALLS.clear()
    return reg


def test_reproduce_prints_table_claims_and_writes_json_and_png(toy_registry, tmp_path, capsys):
    rc = cli.main(["reproduce", "toy", "--quick", "--seed", "3", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert CALLS == [dict(quick=True, seed=3, out=tmp_path)]
    out = capsys.readouterr().out
    assert "ours" in out and "[PASS] ours beats the baseline" in out and "[FAIL] a claim" in out
    data = json.loads((tmp_path / "toy.json").read_text())
    assert data["rows"][0] == {"method": "ours", "score": 0.91}
    assert data["meta"]["quick"] is True and data["meta"]["seed"] == 3
    assert [c["passed"] for c in data["claims"]] == [True, False]
    png = tmp_path / "toy.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_flag_fails_on_a_failed_claim(toy_registry, tmp_path):
    assert cli.main(["reproduce", "toy", "--quick", "--check", "--out", str(tmp_path)]) == 1
    assert cli.main(["reproduce", "toy", "--check", "--out", str(tmp_path)]) == 0


def test_full_flag_refused_when_unsupported(toy_registry, tmp_path, capsys):
    assert cli.main(["reproduce", "toy", "--full", "--out", str(tmp_path)]) == 2
    assert "--full" in capsys.readouterr().err


def test_non_result_return_is_reported(toy_registry, tmp_path, capsys):
    assert cli.main(["reproduce", "bad", "--out", str(tmp_path)]) == 1
    assert "expected gradkit_core.results.Result" in capsys.readouterr().err


def test_unknown_reproduction_is_a_clear_error(toy_registry, capsys):
    assert cli.main(["bench", "toy"]) == 2
    assert "no installed benchmark 'toy'" in capsys.readouterr().err


def test_format_table_alignment_and_number_format():
    t = format_table([{"a": 1.23456789, "b": "x"}, {"a": 1e-6, "b": "long value"}])
    lines = t.splitlines()
    assert lines[0].split() == ["a", "b"] and lines[2].split()[0] == "1.235" and lines[3].split()[0] == "1.000e-06"
    assert len({len(l.rstrip()) <= len(lines[1]) for l in lines}) == 1


def test_nonfinite_values_survive_json(tmp_path):
    r = Result("nan")
    r.add_row(v=float("nan"))
    r.save(tmp_path)
    assert json.loads((tmp_path / "nan.json").read_text())["rows"][0]["v"] == "nan"
