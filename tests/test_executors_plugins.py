"""Small real sweeps (dsact on Pendulum, dcgme on PointOmni) give the same results serially, in local
worker processes and on a local Ray instance, through the executor the CLI selects; a sweep started
locally is finished on Ray with --resume."""

import pytest

from gradkit_core import executors

pytest.importorskip("gradkit_dsact")
pytest.importorskip("gradkit_dcgme")
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'gradkit-core[ray]')")


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def dsact_key(res):
    return [(r["method"], r["final_return"], r["updates"]) for r in res.rows]


def dcgme_key(res):  # every reported number except timings
    return [{k: v for k, v in r.items() if "time" not in k and not k.endswith("_s")} for r in res.rows]


def test_dsact_sweep_is_the_same_on_every_executor(ray_instance, tmp_path):
    from gradkit_dsact.reproduce import run

    serial = run(quick=True, steps=40, progress=False)
    with executors.use("local"):
        local = run(quick=True, steps=40, progress=False, jobs=2)
    with executors.use("ray"):
        on_ray = run(quick=True, steps=40, progress=False, jobs=2, out=tmp_path)
    assert dsact_key(local) == dsact_key(serial) == dsact_key(on_ray)
    assert len(list((tmp_path / "runs").glob("*.json"))) == len(serial.rows)


def test_dcgme_sweep_is_the_same_on_every_executor_and_resumes_across_them(ray_instance, tmp_path):
    from gradkit_dcgme.reproduce import run

    serial = run(quick=True, iterations=1, progress=False)
    with executors.use("local"):
        local = run(quick=True, iterations=1, progress=False, jobs=2, out=tmp_path / "a")
    assert dcgme_key(local) == dcgme_key(serial)
    # drop one stored run of the local sweep, then finish the sweep on Ray from the rest
    runs = sorted((tmp_path / "a" / "runs").glob("*.json"))
    kept = {p.name: p.read_text() for p in runs[1:]}
    runs[0].unlink()
    with executors.use("ray"):
        finished = run(quick=True, iterations=1, progress=False, jobs=2, out=tmp_path / "a", resume=True)
    assert dcgme_key(finished) == dcgme_key(serial)
    assert all((tmp_path / "a" / "runs" / n).read_text() == t for n, t in kept.items()), "stored runs not rerun"
    assert runs[0].exists(), "the missing run was computed on Ray and stored"


def test_dcgme_generations_rolled_out_on_ray_give_the_serial_archive(ray_instance):
    """Each generation's offspring in 2 chunks on Ray (issue 17): the same archive and replay buffer as
    in-process evaluation, for PointOmni with random starts (so every chunk must get its seeds right)."""
    import numpy as np
    from gradkit_dcgme.algorithm import DCGME

    tiny = dict(n_cells=16, n_init_cvt_samples=1000, init_batch=8, ga_batch=4, pg_batch=4, actor_episodes=4,
                policy_hidden=(16, 16), critic_hidden=(32, 32), critic_steps=6, pg_steps=3, batch_size=32,
                replay_size=20_000)
    env_kwargs = dict(reset_noise_scale=0.3)
    ref = DCGME("gradkit/PointOmni-v0", seed=5, env_kwargs=env_kwargs, **tiny).learn(2)
    on_ray = DCGME("gradkit/PointOmni-v0", seed=5, env_kwargs=env_kwargs, jobs=2, executor="ray", **tiny)
    try:
        on_ray.learn(2)
        assert ray.is_initialized(), "the agent used the running instance and left it up"
    finally:
        on_ray.close()
    assert ray.is_initialized(), "closing the agent does not stop a Ray instance it did not start"
    for a, b in ((ref.archive.genomes, on_ray.archive.genomes), (ref.archive.fitness, on_ray.archive.fitness),
                 (ref.archive.descriptors, on_ray.archive.descriptors)):
        np.testing.assert_array_equal(a, b)
    buf_a, buf_b = ref.buffer.state_dict(), on_ray.buffer.state_dict()
    for k in buf_a:
        np.testing.assert_array_equal(buf_a[k], buf_b[k])
    assert ref.history == on_ray.history
    ref.close()
