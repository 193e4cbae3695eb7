"""Independent runs on every executor: serial, local processes and Ray give the same results; resume works
across executors; a failing run is reported while the others complete; a killed worker's run is retried once."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_fns  # noqa: E402

from gradkit_core import cli, executors  # noqa: E402
from gradkit_core.results import RunsFailed, run_many  # noqa: E402

TASKS = [dict(method=m, seed=s) for m in ("a", "b") for s in range(3)]


def strip(results):
    return [{k: v for k, v in r.items() if k != "pid"} for r in results]


def test_serial_and_local_processes_agree_and_local_uses_workers():
    serial = run_many(sweep_fns.seeded_run, TASKS, executor="serial")
    local = run_many(sweep_fns.seeded_run, TASKS, jobs=2, executor="local")
    assert strip(serial) == strip(local)
    assert [r["method"] for r in local] == [t["method"] for t in TASKS], "task order is kept"
    import os

    assert {r["pid"] for r in serial} == {os.getpid()} and os.getpid() not in {r["pid"] for r in local}


def test_a_failing_run_is_reported_with_its_task_and_the_others_are_stored(tmp_path):
    tasks = TASKS + [dict(method="bad", seed=7)]
    for ex, jobs in (("serial", 1), ("local", 2)):
        cache = tmp_path / ex
        with pytest.raises(RunsFailed) as err:
            run_many(sweep_fns.failing_run, tasks, jobs=jobs, executor=ex, cache_dir=cache)
        assert len(err.value.failures) == 1
        task, tb = err.value.failures[0]
        assert task == dict(method="bad", seed=7) and "diverged at seed 7" in tb and "Traceback" in tb
        assert '"method": "bad"' in str(err.value)
        assert len(list(cache.glob("*.json"))) == len(TASKS), "every other run finished and is stored"


def test_a_killed_worker_is_retried_once_then_reported(tmp_path):
    out = run_many(sweep_fns.dies_once, [dict(t, marker_dir=str(tmp_path)) for t in TASKS[:3]], jobs=2,
                   executor="local")
    assert strip(out) == strip(run_many(sweep_fns.seeded_run, TASKS[:3], executor="serial"))
    with pytest.raises(RunsFailed, match="died twice"):
        run_many(sweep_fns.always_dies, TASKS[:2], jobs=2, executor="local")


def test_unknown_executor_and_address_without_ray_are_clear_errors():
    with pytest.raises(executors.ExecutorError, match="unknown executor 'dask'"):
        run_many(sweep_fns.seeded_run, TASKS, executor="dask")
    with pytest.raises(executors.ExecutorError, match="--address is for --executor ray"):
        with executors.use("local", address="ray://x:1"):
            pass


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(executors.ExecutorError, match=r"pip install 'gradkit-core\[ray\]'"):
        run_many(sweep_fns.seeded_run, TASKS, jobs=2, executor="ray")


def _map(ex, fn, calls):
    got, errors = {}, {}
    ex.map(fn, calls, got.__setitem__, errors.__setitem__)
    assert not errors, errors
    return [got[i] for i in range(len(calls))]


def test_a_local_session_keeps_one_pool_across_maps_and_replaces_a_broken_one(tmp_path):
    ex = executors.ProcessExecutor(2)
    with ex.session():
        first = _map(ex, sweep_fns.seeded_run, TASKS[:4])
        second = _map(ex, sweep_fns.seeded_run, TASKS[2:])
        assert {r["pid"] for r in second} <= {r["pid"] for r in first}, "the second map reused the workers"
        pool = ex._pool
        calls = [dict(t, marker_dir=str(tmp_path)) for t in TASKS[:3]]
        assert strip(_map(ex, sweep_fns.dies_once, calls)) == strip(first[:3]), "a killed worker's run is retried"
        assert ex._pool is not pool, "the broken pool was replaced"
        assert strip(_map(ex, sweep_fns.seeded_run, TASKS[:2])) == strip(first[:2])
    assert ex._pool is None
    # outside a session every map has fresh workers
    a, b = _map(ex, sweep_fns.seeded_run, TASKS[:4]), _map(ex, sweep_fns.seeded_run, TASKS[:4])
    assert not {r["pid"] for r in a} & {r["pid"] for r in b}


ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'gradkit-core[ray]')")


def test_a_ray_session_starts_ray_once_for_all_maps_and_stops_it_after():
    here = str(Path(__file__).resolve().parent)
    ex = executors.RayExecutor(2, init_kwargs={"runtime_env": {"env_vars": {"PYTHONPATH": here}}})
    assert not ray.is_initialized()
    with ex.session():
        assert ray.is_initialized()
        node = ray.get_runtime_context().get_node_id()
        first = _map(ex, sweep_fns.seeded_run, TASKS[:3])
        assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == node, "still the same instance"
        assert strip(_map(ex, sweep_fns.seeded_run, TASKS[:3])) == strip(first)
    assert not ray.is_initialized()
    assert strip(first) == strip(run_many(sweep_fns.seeded_run, TASKS[:3], executor="serial"))


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: 2 CPUs, no dashboard, shut down at the end."""
    here = str(Path(__file__).resolve().parent)  # Ray workers import sweep_fns from here
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": here}})
    yield
    ray.shutdown()


def test_ray_gives_the_same_results_and_resumes_a_local_sweep(ray_instance, tmp_path):
    serial = run_many(sweep_fns.seeded_run, TASKS, executor="serial")
    on_ray = run_many(sweep_fns.seeded_run, TASKS, jobs=2, executor="ray")
    assert strip(on_ray) == strip(serial)
    # a sweep started locally (half of it) is finished on Ray from the stored runs, and the other way round
    cache = tmp_path / "runs"
    run_many(sweep_fns.seeded_run, TASKS[:3], jobs=2, executor="local", cache_dir=cache)
    stored = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    finished = run_many(sweep_fns.seeded_run, TASKS, jobs=2, executor="ray", cache_dir=cache, resume=True)
    assert strip(finished) == strip(serial)
    assert all(cache.joinpath(n).stat().st_mtime_ns == t for n, t in stored.items()), "stored runs are not rerun"
    assert len(list(cache.glob("*.json"))) == len(TASKS)
    again = run_many(sweep_fns.seeded_run, TASKS, jobs=2, executor="local", cache_dir=cache, resume=True)
    assert again == finished, "Ray's stored runs are read back by the local executor"


def test_ray_reports_a_failing_run_and_completes_the_others(ray_instance, tmp_path):
    with pytest.raises(RunsFailed) as err:
        run_many(sweep_fns.failing_run, TASKS + [dict(method="bad", seed=3)], jobs=2, executor="ray",
                 cache_dir=tmp_path)
    assert [t for t, _ in err.value.failures] == [dict(method="bad", seed=3)]
    assert "diverged at seed 3" in err.value.failures[0][1]
    assert len(list(tmp_path.glob("*.json"))) == len(TASKS)


def test_ray_retries_a_killed_worker_once(ray_instance, tmp_path):
    out = run_many(sweep_fns.dies_once, [dict(t, marker_dir=str(tmp_path)) for t in TASKS[:3]], jobs=2,
                   executor="ray")
    assert strip(out) == strip(run_many(sweep_fns.seeded_run, TASKS[:3], executor="serial"))
