"""CVT archive: elitism per cell, deterministic centroids, metrics cross-checked with ribs."""

import numpy as np
import pytest

from gradkit_dcgme.archive import CVTArchive, cvt_centroids


def _grid_archive(genome_dim=3):
    # four cells with centroids at the quadrant centres of [-1, 1]^2
    c = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    return CVTArchive(4, [-1, -1], [1, 1], genome_dim, centroids=c)


def test_elitism_per_cell():
    a = _grid_archive()
    g = np.arange(9, dtype=np.float32).reshape(3, 3)
    added = a.add(g, [1.0, 5.0, 2.0], [[0.4, 0.4], [-0.3, -0.9], [0.9, -0.1]])
    assert added.tolist() == [True, True, True]
    assert a.fitness[3] == 1.0 and a.fitness[0] == 5.0 and a.fitness[1] == 2.0
    # lower fitness does not replace; higher does; the other cells are untouched
    added = a.add(np.full((2, 3), 7, np.float32), [0.5, 3.0], [[0.6, 0.6], [0.7, 0.9]])
    assert added.tolist() == [False, True]
    np.testing.assert_array_equal(a.genomes[3], [7, 7, 7])
    np.testing.assert_array_equal(a.descriptors[3], [0.7, 0.9])
    assert a.fitness[3] == 3.0 and a.fitness[0] == 5.0 and a.fitness[1] == 2.0
    # equal fitness does not replace (strict improvement)
    assert not a.add(np.zeros((1, 3), np.float32), [5.0], [[-0.1, -0.1]])[0]
    # within one batch, the fittest of several offspring for a cell wins
    added = a.add(np.stack([np.full(3, 1.0), np.full(3, 2.0), np.full(3, 3.0)]).astype(np.float32),
                  [8.0, 9.0, 8.5], [[-0.2, 0.2], [-0.9, 0.9], [-0.5, 0.5]])
    assert added.tolist() == [False, True, False]
    assert a.fitness[2] == 9.0 and a.genomes[2][0] == 2.0
    assert a.coverage() == 1.0
    assert a.qd_score() == pytest.approx(5 + 2 + 9 + 3)
    assert a.max_fitness() == 9.0


def test_cvt_centroids_deterministic_under_a_seed():
    c1 = cvt_centroids(16, [-1, 0], [1, 2], n_init_samples=2000, seed=3)
    c2 = cvt_centroids(16, [-1, 0], [1, 2], n_init_samples=2000, seed=3)
    c3 = cvt_centroids(16, [-1, 0], [1, 2], n_init_samples=2000, seed=4)
    np.testing.assert_array_equal(c1, c2)
    assert not np.allclose(np.sort(c1, axis=0), np.sort(c3, axis=0))
    assert np.all(c1 >= [-1, 0]) and np.all(c1 <= [1, 2])
    # a CVT spreads its cells: every cell of 16 gets roughly 1/16 of uniform samples
    a = CVTArchive(16, [-1, 0], [1, 2], 1, centroids=c1)
    x = np.random.default_rng(0).uniform([-1, 0], [1, 2], size=(4000, 2))
    counts = np.bincount(a.index_of(x), minlength=16)
    assert counts.min() > 0.5 * 250 and counts.max() < 1.5 * 250


def test_descriptor_outside_bounds_is_a_clear_error():
    a = _grid_archive()
    with pytest.raises(ValueError, match="outside the descriptor bounds"):
        a.add(np.zeros((1, 3), np.float32), [1.0], [[1.5, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        a.add(np.zeros((1, 3), np.float32), [1.0], [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="finite"):
        a.add(np.zeros((1, 3), np.float32), [np.nan], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="empty"):
        a.sample(2, np.random.default_rng(0))


def test_state_round_trip():
    a = _grid_archive()
    a.add(np.ones((2, 3), np.float32), [1.0, 2.0], [[0.5, 0.5], [-0.5, 0.5]])
    b = _grid_archive()
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.fitness, b.fitness)
    np.testing.assert_array_equal(a.genomes, b.genomes)


def test_qd_score_and_coverage_match_ribs():
    ribs_archives = pytest.importorskip("ribs.archives")
    rng = np.random.default_rng(0)
    centroids = cvt_centroids(32, [-2, -2], [2, 2], n_init_samples=3000, seed=0)
    ours = CVTArchive(32, [-2, -2], [2, 2], 4, centroids=centroids)
    theirs = ribs_archives.CVTArchive(solution_dim=4, centroids=centroids, ranges=[(-2, 2), (-2, 2)])
    for _ in range(6):
        n = 25
        sol = rng.standard_normal((n, 4)).astype(np.float32)
        fit = rng.uniform(0, 10, n)
        desc = rng.uniform(-2, 2, (n, 2))
        ours.add(sol, fit, desc)
        theirs.add(sol, fit, desc)
        st = theirs.stats
        assert ours.qd_score() == pytest.approx(float(st.qd_score), rel=1e-6)
        assert ours.coverage() == pytest.approx(float(st.coverage))
        assert ours.max_fitness() == pytest.approx(float(st.obj_max))
    # same elites cell by cell
    data = theirs.data()
    idx = ours.index_of(np.asarray(data["measures"]))
    np.testing.assert_allclose(ours.fitness[idx], data["objective"])


def test_reevaluation_keeps_running_means_and_replaces_elites_by_them():
    a = _grid_archive()
    g = np.array([[1, 1, 1], [2, 2, 2]], np.float32)
    a.add(g, [10.0, 4.0], [[0.5, 0.5], [-0.5, -0.5]])  # cells 3 and 0
    assert a.counts.tolist() == [1, 0, 0, 1]
    # cell 0's elite re-evaluates at 2 in the same quadrant; cell 3's (a lucky 10) at 2 near cell 0's centroid
    dropped = a.reevaluate([4.0 - 2.0, 2.0], [[-0.7, -0.3], [-0.9, -0.9]])
    # running means: cell-0 elite (4 + 2)/2 = 3 at (-0.6, -0.4); cell-3 elite (10 + 2)/2 = 6 at (-0.2, -0.2)
    assert dropped == 1  # both means land in cell 0: the better mean (6) keeps it
    assert a.filled.tolist() == [True, False, False, False]
    assert a.fitness[0] == 6.0 and a.counts[0] == 2
    np.testing.assert_allclose(a.descriptors[0], [-0.2, -0.2])
    np.testing.assert_array_equal(a.genomes[0], [1, 1, 1])
    with pytest.raises(ValueError, match="one new evaluation per elite"):
        a.reevaluate([1.0, 2.0], [[0, 0], [0, 0]])
    state = a.state_dict()
    b = _grid_archive()
    b.load_state_dict(state)
    assert b.counts.tolist() == a.counts.tolist()
