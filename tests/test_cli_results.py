"""`gradkit reproduce` / `bench` plumbing and Result output, with an in-memory plugin."""

import json
import sys
import types

import pytest

import gradkit_core as gk
from gradkit_core import cli, hookimpl
from gradkit_core.registry import Registry
from gradkit_core.results import Result, format_table, run_many

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


def fake_parallel(*, out=None, seed=0, progress=True, jobs=1, resume=False):
    from gradkit_core import executors

    CALLS.append(dict(jobs=jobs, resume=resume))
    EXECUTORS.append(executors.make(None, jobs=jobs).describe())
    return Result("par")


EXECUTORS = []


def not_a_result(**kw):
    return {"score": 1}


@pytest.fixture
def toy_registry(monkeypatch):
    mod = types.ModuleType("toyplug")
    mod.PLUGIN_API_VERSION = 1

    def gradkit_register_reproductions(register):
        register("toy", fake_repro, summary="toy")
        register("bad", not_a_result)
        register("par", fake_parallel)

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


def test_jobs_and_resume_reach_plugins_that_take_them(toy_registry, tmp_path):
    assert cli.main(["reproduce", "par", "--jobs", "3", "--resume", "--out", str(tmp_path)]) == 0
    assert CALLS[-1] == dict(jobs=3, resume=True)
    assert cli.main(["reproduce", "par", "--out", str(tmp_path)]) == 0
    assert CALLS[-1] == dict(jobs=1, resume=False)  # not given: the plugin's defaults


@pytest.mark.parametrize("flag", [["--jobs", "2"], ["--resume"]])
def test_jobs_and_resume_refused_where_unsupported(toy_registry, tmp_path, capsys, flag):
    assert cli.main(["reproduce", "toy", *flag, "--out", str(tmp_path)]) == 2
    assert f"does not take {flag[0]}" in capsys.readouterr().err
    assert CALLS == []


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_jobs_must_be_a_positive_integer(toy_registry, capsys, bad):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "par", "--jobs", bad])
    assert "positive integer" in capsys.readouterr().err


# ---------------------------------------------------------------------- run_many
def test_run_many_in_processes_keeps_task_order(tmp_path):
    tasks = [dict(obj=[i, "x" * i]) for i in range(5)]
    serial = run_many(json.dumps, tasks, jobs=1)
    parallel = run_many(json.dumps, tasks, jobs=3, cache_dir=tmp_path)  # spawned workers import json.dumps
    assert serial == parallel == [json.dumps([i, "x" * i]) for i in range(5)]
    assert len(list(tmp_path.glob("*.json"))) == 5


def test_run_many_stores_each_run_and_resume_reuses_only_matching_tasks(tmp_path):
    calls = []

    def fn(a, b, verbose=False):
        calls.append((a, b))
        return {"sum": a + b}

    tasks = [dict(a=1, b=2), dict(a=3, b=4)]
    assert run_many(fn, tasks, cache_dir=tmp_path, shared=dict(verbose=True)) == [{"sum": 3}, {"sum": 7}]
    assert calls == [(1, 2), (3, 4)]
    # a rerun without resume runs everything again
    run_many(fn, tasks, cache_dir=tmp_path)
    assert len(calls) == 4
    # resume: stored runs are read back; a new task runs; shared kwargs are not part of a run's identity
    calls.clear()
    out = run_many(fn, tasks + [dict(a=5, b=6)], cache_dir=tmp_path, resume=True, shared=dict(verbose=False))
    assert out == [{"sum": 3}, {"sum": 7}, {"sum": 11}] and calls == [(5, 6)]
    # a stored file whose task differs (same file name, edited by hand) is not trusted
    path = next(p for p in tmp_path.glob("*.json") if json.loads(p.read_text())["task"] == dict(a=1, b=2))
    stored = json.loads(path.read_text())
    stored["task"]["b"] = 99
    path.write_text(json.dumps(stored))
    calls.clear()
    assert run_many(fn, tasks[:1], cache_dir=tmp_path, resume=True) == [{"sum": 3}] and calls == [(1, 2)]


def test_run_many_bad_arguments():
    with pytest.raises(ValueError, match="positive integer"):
        run_many(json.dumps, [], jobs=0)
    with pytest.raises(ValueError, match="cache_dir"):
        run_many(json.dumps, [], resume=True)


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


def test_missing_matplotlib_is_said_on_the_console_and_no_png_is_claimed(tmp_path, capsys, monkeypatch):
    import sys

    res = Result("nomp")
    res.add_curve("loss", "a", [0, 1], [1.0, 0.5])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    written = res.save(tmp_path)
    assert [p.name for p in written] == ["nomp.json"] and not (tmp_path / "nomp.png").exists()
    err = capsys.readouterr().err
    assert "no plot written" in err and "matplotlib" in err


def test_executor_option_reaches_run_many_in_plugins_that_take_jobs(toy_registry, tmp_path, capsys):
    EXECUTORS.clear()
    assert cli.main(["reproduce", "par", "--jobs", "2", "--executor", "serial", "--out", str(tmp_path)]) == 0
    assert cli.main(["reproduce", "par", "--jobs", "2", "--out", str(tmp_path)]) == 0
    assert EXECUTORS == ["serial (1 job)", "local (2 jobs)"]
    assert json.loads((tmp_path / "par.json").read_text())["meta"].get("executor") is None
    assert cli.main(["reproduce", "toy", "--executor", "ray", "--out", str(tmp_path)]) == 2
    assert "does not take --executor" in capsys.readouterr().err
    assert cli.main(["reproduce", "par", "--address", "auto", "--out", str(tmp_path)]) == 2
    assert "--address" in capsys.readouterr().err


def test_failed_runs_are_one_error_with_tracebacks_in_the_out_dir(toy_registry, tmp_path, capsys, monkeypatch):
    from gradkit_core.results import RunsFailed

    def boom(**kw):
        raise RunsFailed([({"method": "x", "seed": 1}, "Traceback ...\nValueError: diverged")], 4)

    monkeypatch.setattr(sys.modules[__name__], "fake_parallel", boom)
    toy_registry._specs[("reproductions", "par")] = [toy_registry.resolve("par").evolve(target=boom)]
    assert cli.main(["reproduce", "par", "--jobs", "2", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 4 runs failed") and err.count("\n") == 1 and "ValueError: diverged" in err
    assert "ValueError: diverged" in (tmp_path / "failures.txt").read_text()


def test_paired_beyond_is_strict_and_needs_seeds():
    from gradkit_core.results import paired_beyond

    assert paired_beyond([10.0, 11.0, 12.0], [1.0, 2.0, 2.0])[0]
    assert not paired_beyond([3.0, 3.0], [3.0, 3.0])[0]  # an exact tie never holds
    assert not paired_beyond([5.0, 1.0, 6.0], [1.0, 5.0, 2.0])[0]  # ahead on the mean, within 2 SE
    ok, detail = paired_beyond([10.0], [1.0])
    assert not ok and "undecided" in detail  # one seed: no standard error
    for a, b in (([], []), ([1.0], [1.0, 2.0]), ([float("inf")], [0.0]), (["x"], [0.0])):
        with pytest.raises(ValueError, match="paired_beyond"):
            paired_beyond(a, b)
    with pytest.raises(ValueError, match="k must be"):
        paired_beyond([1.0, 2.0], [0.0, 0.0], k=float("nan"))
