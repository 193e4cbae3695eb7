"""GBNN: hand-computed first stage, assembled network == staged sum, loss gradients vs autograd,
line search vs a numeric minimiser, bad input, scikit-learn conventions, registration."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit, softmax
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import MLPRegressor

import gradkit_core
from gradkit_gbnn.boosting import (GBNNClassifier, GBNNRegressor, LogExponentialLoss, MultinomialLoss,
                                   SquaredLoss)

INT32_MAX = np.iinfo(np.int32).max
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(n=24, d=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    return X, rng


def _stage_by_hand(est, X, r, rng):
    """Refit the first stage the way GBNN must: subsample drawn first (without replacement),
    then the stage seed, then an MLPRegressor(J logistic units) on the residuals."""
    n = X.shape[0]
    n_sub = int(est.subsample * n)
    idx = rng.choice(n, size=n_sub, replace=False) if n_sub < n else np.arange(n)
    seed = int(rng.randint(INT32_MAX))
    reg = MLPRegressor(hidden_layer_sizes=(est.units_per_step,), activation="logistic", solver="lbfgs",
                       alpha=est.alpha, max_iter=est.max_iter, tol=0.0, n_iter_no_change=est.max_iter,
                       random_state=seed)
    reg.fit(X[idx], r[idx])
    W1, b1, W2, b2 = reg.coefs_[0], reg.intercepts_[0], reg.coefs_[1], reg.intercepts_[1]
    h = expit(X @ W1 + b1) @ W2 + b2  # by hand
    np.testing.assert_allclose(h.reshape(reg.predict(X).shape), reg.predict(X), rtol=1e-10, atol=1e-12)
    return reg, (h[:, 0] if r.ndim == 1 else h), np.sort(idx)


# --------------------------------------------------------------------------- first stage by hand
@pytest.mark.parametrize("subsample", [1.0, 0.5])
def test_first_stage_regression_by_hand(subsample):
    X, rng = _data()
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    est = GBNNRegressor(total_units=1, eta=0.5, subsample=subsample, max_iter=50, random_state=3).fit(X, y)
    F0 = y.mean()
    r = y - F0
    reg, h, idx = _stage_by_hand(est, X, r, np.random.RandomState(3))
    np.testing.assert_allclose(est.estimators_[0].coefs_[0], reg.coefs_[0])  # the stage was fitted to r on idx
    rho = np.sum(r * h) / np.sum(h * h)  # exact least-squares step on the FULL set
    F1 = F0 + 0.5 * rho * h
    assert est.init_[0] == pytest.approx(F0)
    assert est.rhos_[0] == pytest.approx(rho, rel=1e-10)
    assert est.steps_[0] == pytest.approx(0.5 * rho, rel=1e-10)
    np.testing.assert_allclose(est.predict(X), F1, rtol=1e-10, atol=1e-12)
    assert est.train_loss_[0] == pytest.approx(np.mean((y - F1) ** 2) / 2)
    assert est.init_loss_ == pytest.approx(np.mean(r ** 2) / 2)
    if subsample < 1.0:
        assert len(idx) == 12 and len(np.unique(idx)) == 12  # half, without replacement


def test_official_line_search_is_step_one_for_squared_loss():
    X, _ = _data()
    y = X[:, 0] ** 2
    est = GBNNRegressor(total_units=3, line_search="official", max_iter=30, random_state=0).fit(X, y)
    np.testing.assert_array_equal(est.rhos_, np.ones(3))


def test_first_stage_binary_by_hand():
    X, _ = _data(n=30)
    y01 = (X[:, 0] + 0.3 * X[:, 2] > 0.2).astype(int)
    est = GBNNClassifier(total_units=1, eta=0.7, subsample=0.5, max_iter=50, random_state=5).fit(X, y01)
    y = 2.0 * y01 - 1.0
    ybar = y.mean()
    F0 = 0.5 * np.log((1 + ybar) / (1 - ybar))
    r = 2 * y / (1 + np.exp(2 * y * F0))
    reg, h, _ = _stage_by_hand(est, X, r, np.random.RandomState(5))
    rho = np.sum(r * h) / np.sum(r * h * h * (2 * y - r))
    F1 = F0 + 0.7 * rho * h
    assert est.init_[0] == pytest.approx(F0)
    assert est.rhos_[0] == pytest.approx(rho, rel=1e-10)
    np.testing.assert_allclose(est.decision_function(X), F1, rtol=1e-10, atol=1e-12)
    p1 = 1 / (1 + np.exp(-2 * F1))
    np.testing.assert_allclose(est.predict_proba(X), np.column_stack([1 - p1, p1]), rtol=1e-10)
    assert est.train_loss_[0] == pytest.approx(np.mean(np.log1p(np.exp(-2 * y * F1))))
    np.testing.assert_array_equal(est.predict(X), (p1 > 0.5).astype(int))


def test_first_stage_multiclass_by_hand():
    X, _ = _data(n=36)
    labels = np.array(["a", "b", "c"])[np.argmax(X, axis=1)]
    est = GBNNClassifier(total_units=2, units_per_step=2, subsample=1.0, max_iter=40, random_state=1).fit(X, labels)
    Y = np.eye(3)[np.searchsorted(["a", "b", "c"], labels)]
    F0 = np.zeros(3)
    p = np.full_like(Y, 1 / 3)
    r = Y - p
    reg, h, _ = _stage_by_hand(est, X, r, np.random.RandomState(1))
    assert h.shape == (36, 3) and reg.coefs_[0].shape == (3, 2)  # J = 2 units shared by the K = 3 outputs
    rho = -np.sum(h * (Y - p)) / np.sum(h * h * p * (p - 1))  # the paper's multi-class Newton step
    F1 = F0 + rho * h
    assert est.rhos_[0] == pytest.approx(rho, rel=1e-10)
    np.testing.assert_allclose(est.decision_function(X), F1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.predict_proba(X), softmax(F1, axis=1), rtol=1e-10)
    assert list(est.classes_) == ["a", "b", "c"]


# --------------------------------------------------------------------------- assembled == staged
@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_assembled_network_equals_staged_sum(task, eta):
    X, rng = _data(n=40, d=4, seed=2)
    if task == "regression":
        est = GBNNRegressor(total_units=8, units_per_step=2, eta=eta, max_iter=40, random_state=0)
        y = X[:, 0] * X[:, 1] + np.cos(X[:, 2])
    else:
        est = GBNNClassifier(total_units=8, units_per_step=2, eta=eta, max_iter=40, random_state=0)
        y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5 if task == "multiclass" else 0)
    est.fit(X, y)
    Xt = rng.normal(size=(15, 4))
    raw = est.predict if task == "regression" else est.decision_function
    staged = list(est.staged_predict(Xt) if task == "regression" else est.staged_decision_function(Xt))
    assert len(staged) == est.n_estimators_ == 4 and est.n_units_ == 8
    # staged sum, written out stage by stage from the stage regressors themselves
    F = np.tile(est.init_, (15, 1))
    for step, reg in zip(est.steps_, est.estimators_):
        F = F + step * reg.predict(Xt).reshape(15, -1)
    F = F[:, 0] if F.shape[1] == 1 else F
    np.testing.assert_allclose(staged[-1], F, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(raw(Xt), F, rtol=1e-10, atol=1e-12)
    # one torch network with T*J hidden units reproduces it (binary: logit 2F)
    net = est.to_torch(dtype=torch.float64)
    assert net[0].out_features == 8
    with torch.no_grad():
        out = net(torch.as_tensor(Xt)).numpy()
    if task == "regression":
        np.testing.assert_allclose(out[:, 0], F, rtol=1e-10, atol=1e-12)
    elif task == "binary":
        np.testing.assert_allclose(out[:, 0], 2 * F, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(expit(out[:, 0]), est.predict_proba(Xt)[:, 1], rtol=1e-10)
    else:
        np.testing.assert_allclose(softmax(out, axis=1), est.predict_proba(Xt), rtol=1e-10)
    # truncation keeps the first stages: equals the staged prediction after 2 of 4 stages
    small = est.truncate(4)
    small_raw = small.predict if task == "regression" else small.decision_function
    np.testing.assert_allclose(small_raw(Xt), staged[1], rtol=1e-10, atol=1e-12)
    assert small.n_units_ == 4 and est.n_units_ == 8  # the original is untouched
    with torch.no_grad():
        out4 = est.to_torch(n_units=4, dtype=torch.float64)(torch.as_tensor(Xt)).numpy()
    mult = 2.0 if task == "binary" else 1.0
    np.testing.assert_allclose(out4.reshape(staged[1].shape), mult * staged[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
def test_torch_export_for_every_activation(act):
    X, rng = _data(n=30, d=3, seed=8)
    y = np.tanh(X[:, 0]) + X[:, 1]
    est = GBNNRegressor(total_units=3, activation=act, max_iter=30, random_state=0).fit(X, y)
    with torch.no_grad():
        out = est.to_torch(dtype=torch.float64)(torch.as_tensor(X)).numpy()[:, 0]
    np.testing.assert_allclose(out, est.predict(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(list(est.staged_predict(X))[-1], est.predict(X), rtol=1e-10, atol=1e-12)


def test_multi_output_regression_and_adam_stages():
    X, _ = _data(n=50, d=3, seed=9)
    Y = np.column_stack([X[:, 0] ** 2, np.sin(X[:, 1])])
    est = GBNNRegressor(total_units=6, units_per_step=2, solver="adam", max_iter=150, learning_rate_init=0.05,
                        subsample=1.0, random_state=0).fit(X, Y)
    assert est.predict(X).shape == (50, 2) and est.init_.shape == (2,)
    np.testing.assert_allclose(est.init_, Y.mean(axis=0))
    np.testing.assert_allclose(list(est.staged_predict(X))[-1], est.predict(X), rtol=1e-10, atol=1e-12)
    losses = np.concatenate([[est.init_loss_], est.train_loss_])
    assert np.all(np.diff(losses) <= 1e-12) and losses[-1] < 0.5 * losses[0]


def test_binary_with_multinomial_loss_uses_two_softmax_outputs():
    X, _ = _data(n=40, seed=11)
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    est = GBNNClassifier(total_units=3, loss="multinomial", max_iter=40, random_state=0).fit(X, y)
    F = est.decision_function(X)
    assert F.shape == (40, 2) and est.coefs_[1].shape == (3, 2)
    np.testing.assert_allclose(est.predict_proba(X), softmax(F, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(est.predict(X), est.classes_[np.argmax(F, axis=1)])
    assert est.score(X, y) > 0.8


def test_staged_predict_matches_predict():
    X, _ = _data(n=40)
    y = (X[:, 0] > 0).astype(int)
    est = GBNNClassifier(total_units=5, max_iter=30, random_state=0).fit(X, y)
    stages = list(est.staged_predict(X))
    np.testing.assert_array_equal(stages[-1], est.predict(X))
    np.testing.assert_allclose(list(est.staged_predict_proba(X))[-1], est.predict_proba(X))


# --------------------------------------------------------------------------- losses vs autograd
def _torch_losses():
    return {
        "squared": lambda y, F: 0.5 * ((y - F) ** 2).sum(),
        "binary": lambda y, F: torch.nn.functional.softplus(-2 * y * F).sum(),
        "multinomial": lambda y, F: torch.nn.functional.cross_entropy(F, y.argmax(1), reduction="sum"),
    }


@pytest.mark.parametrize("name,loss", [("squared", SquaredLoss()), ("binary", LogExponentialLoss()),
                                       ("multinomial", MultinomialLoss())])
def test_pseudo_residuals_are_negative_autograd_gradient(name, loss):
    rng = np.random.RandomState(0)
    if name == "squared":
        y, F = rng.normal(size=20), rng.normal(size=20)
    elif name == "binary":
        y, F = rng.choice([-1.0, 1.0], size=20), 3 * rng.normal(size=20)
    else:
        y, F = np.eye(4)[rng.randint(4, size=20)], 2 * rng.normal(size=(20, 4))
    Ft = torch.tensor(F, requires_grad=True)
    total = _torch_losses()[name](torch.tensor(y), Ft)
    (grad,) = torch.autograd.grad(total, Ft, create_graph=True)
    np.testing.assert_allclose(loss.negative_gradient(y, F), -grad.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss(y, F).sum() == pytest.approx(float(total.detach()), rel=1e-10)
    if name == "binary":  # the Newton denominator uses d2L/dF2 = r (2y - r)
        (hess,) = torch.autograd.grad(grad.sum(), Ft)
        r = loss.negative_gradient(y, F)
        np.testing.assert_allclose(r * (2 * y - r), hess.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name,loss", [("squared", SquaredLoss()), ("binary", LogExponentialLoss())])
def test_newton_step_vs_numeric_line_search(name, loss):
    rng = np.random.RandomState(1)
    n = 50
    if name == "squared":
        y, F = rng.normal(size=n), np.zeros(n)
    else:
        y, F = rng.choice([-1.0, 1.0], size=n), 0.3 * rng.normal(size=n)
    r = loss.negative_gradient(y, F)
    h = 0.5 * (r + rng.normal(size=n))  # an imperfect fit of the residuals (finite minimiser along h)

    def phi(rho):
        return float(np.sum(loss(y, F + rho * h)))

    rho = loss.newton_step(y, r, h)
    eps = 1e-4
    d1 = (phi(eps) - phi(-eps)) / (2 * eps)
    d2 = (phi(eps) - 2 * phi(0.0) + phi(-eps)) / eps ** 2
    assert rho == pytest.approx(-d1 / d2, rel=1e-4)  # one Newton step on phi from rho = 0
    best = minimize_scalar(phi, bounds=(0.0, 10.0), method="bounded", options={"xatol": 1e-10}).x
    assert phi(rho) < phi(0.0)
    if name == "squared":  # exact line search in one step
        assert rho == pytest.approx(best, rel=1e-6)
    else:  # the step formula is a true Newton iteration on phi: iterating it reaches the 1-D minimiser
        total = 0.0
        for _ in range(30):
            total += loss.newton_step(y, loss.negative_gradient(y, F + total * h), h)
        assert total == pytest.approx(best, rel=1e-6)
        assert abs(rho - best) / best > 1e-3  # (and one step alone is not the exact minimiser)


def test_multiclass_step_is_diagonal_newton_and_descends():
    rng = np.random.RandomState(2)
    Y, F = np.eye(3)[rng.randint(3, size=40)], rng.normal(size=(40, 3))
    loss = MultinomialLoss()
    r = loss.negative_gradient(Y, F)
    h = 0.1 * (r + 0.2 * rng.normal(size=r.shape))
    rho = loss.newton_step(Y, r, h)
    p = softmax(F, axis=1)
    assert rho == pytest.approx(np.sum(h * r) / np.sum(h * h * p * (1 - p)), rel=1e-12)
    phi = lambda a: float(np.sum(loss(Y, F + a * h)))  # noqa: E731
    assert phi(rho) < phi(0.0)
    # the first derivative of phi at 0 is -sum(h r): the numerator of the step
    assert (phi(1e-5) - phi(-1e-5)) / 2e-5 == pytest.approx(-np.sum(h * r), rel=1e-5)


# --------------------------------------------------------------------------- boosting behaviour
def test_training_loss_decreases_over_stages():
    X, _ = _data(n=80, d=4, seed=4)
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    reg = GBNNRegressor(total_units=15, max_iter=100, random_state=0).fit(X, y)
    losses = np.concatenate([[reg.init_loss_], reg.train_loss_])
    assert np.all(np.diff(losses) <= 1e-12)  # exact line search: never worse than rho = 0
    assert losses[-1] < 0.2 * losses[0]
    yc = (X[:, 0] * X[:, 1] > 0).astype(int)
    clf = GBNNClassifier(total_units=15, max_iter=100, random_state=0).fit(X, yc)
    closs = np.concatenate([[clf.init_loss_], clf.train_loss_])
    assert closs[-1] < 0.5 * closs[0]
    assert np.mean(np.diff(closs) < 0) >= 0.8


def test_backtracking_halves_the_newton_step_until_the_loss_does_not_rise():
    X, _ = _data(n=90, d=4, seed=6)
    y = np.argmax(X[:, :3], axis=1)
    kw = dict(total_units=12, max_iter=100, random_state=0)
    newton = GBNNClassifier(**kw).fit(X, y)
    safe = GBNNClassifier(line_search="backtracking", **kw).fit(X, y)
    losses = np.concatenate([[safe.init_loss_], safe.train_loss_])
    assert np.all(np.diff(losses) <= 1e-12)
    # the first stage sees the same residuals in both fits: its step is the Newton step / 2^k
    k = np.log2(newton.rhos_[0] / safe.rhos_[0])
    assert k >= -1e-9 and abs(k - round(k)) < 1e-9


def test_truncation_degrades_gracefully_on_digits_subset():
    """The claim's direction on a small seeded run: GBNN's first units already carry most of the fit."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(X))
    tr, te = idx[:300], idx[300:]
    clf = GBNNClassifier(total_units=20, max_iter=100, random_state=0).fit(X[tr], y[tr])
    full = clf.score(X[te], y[te])
    assert full > 0.93
    assert clf.truncate(5).score(X[te], y[te]) >= full - 0.03


def test_seeded_fit_is_reproducible():
    X, _ = _data(n=30)
    y = X[:, 0] - X[:, 1]
    a = GBNNRegressor(total_units=4, max_iter=30, random_state=7).fit(X, y).predict(X)
    b = GBNNRegressor(total_units=4, max_iter=30, random_state=7).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("params,match", [
    (dict(loss="hinge"), "unknown loss"),
    (dict(total_units=0), "total_units must be >= 1"),
    (dict(total_units=2, units_per_step=3), "n_estimators"),
    (dict(total_units=2.5), "total_units must be an int"),
    (dict(subsample=0.0), "subsample"),
    (dict(subsample=1.5), "subsample"),
    (dict(eta=0.0), "eta"),
    (dict(activation="softplus"), "unknown activation"),
    (dict(solver="newton"), "unknown solver"),
    (dict(line_search="armijo"), "unknown line_search"),
])
def test_bad_parameters_raise(params, match):
    X, _ = _data()
    y = X[:, 0]
    for est in (GBNNRegressor(**params), GBNNClassifier(**params)):
        if est.loss == "squared_error" and "loss" not in params:
            pass
        with pytest.raises((ValueError, TypeError), match=match):
            est.fit(X, (y > 0).astype(int) if isinstance(est, GBNNClassifier) else y)


def test_bad_data_raises():
    X, _ = _data()
    y = X[:, 0]
    Xnan = X.copy()
    Xnan[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GBNNRegressor(total_units=2).fit(Xnan, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        GBNNRegressor(total_units=2).fit(X, y[:-1])
    with pytest.raises(ValueError, match="2D array"):
        GBNNRegressor(total_units=2).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        GBNNClassifier(total_units=2).fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(ValueError, match="Unknown label type"):
        GBNNClassifier(total_units=2).fit(X, y)  # continuous targets for a classifier
    with pytest.raises(ValueError, match="log-exponential"):
        GBNNClassifier(total_units=2, loss="log-exponential").fit(X, np.arange(len(X)) % 3)
    with pytest.raises(NotFittedError):
        GBNNRegressor().predict(X)
    est = GBNNRegressor(total_units=2, units_per_step=1, max_iter=20, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="n_units"):
        est.truncate(3)
    with pytest.raises(ValueError, match="n_units"):
        est.truncate(0)


# --------------------------------------------------------------------------- sklearn conventions
def test_sklearn_clone_pipeline_and_cross_val():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = GBNNClassifier(total_units=4, eta=0.5, max_iter=30, random_state=0)
    assert clone(est).get_params() == est.get_params()
    est.set_params(eta=0.25)
    assert est.eta == 0.25
    X, _ = _data(n=60)
    y = (X[:, 0] > 0).astype(int)
    scores = cross_val_score(make_pipeline(StandardScaler(), est), X, y, cv=3)
    assert scores.mean() > 0.8


@pytest.mark.parametrize("est", [GBNNClassifier(total_units=4, max_iter=40, random_state=0),
                                 GBNNRegressor(total_units=4, max_iter=40, random_state=0)],
                         ids=["classifier", "regressor"])
def test_sklearn_estimator_checks(est):
    """scikit-learn's own estimator contract (about 50 checks each: input validation, clone,
    pickling, n_features_in_, fitted-state errors, classifier/regressor behaviour)."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # weight k == k repeated rows does not hold here (nor for scikit-learn's stochastic gradient boosting):
        # the subsample draws rows, not weight, and the MLP's L2 penalty is scaled by the row count; the
        # equivalence is tested with subsample=1, alpha=0 in test_integer_sample_weight_equals_repeated_rows_*
        results = check_estimator(est, on_fail=None, expected_failed_checks={
            "check_sample_weight_equivalence_on_dense_data": "row subsample and the MLP's L2 penalty count rows"})
    failed = [(r["check_name"], str(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert len(results) > 40
    assert failed == []


# --------------------------------------------------------------------------- gradkit registration
def test_registered_components_and_head_trainer():
    clf = gradkit_core.create("gbnn-classifier", kind="trainers")
    assert isinstance(clf, GBNNClassifier) and clf.total_units == 200 and clf.subsample == 0.5
    assert isinstance(gradkit_core.create("gbnn-regressor", kind="trainers"), GBNNRegressor)
    torch.manual_seed(0)
    feats = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh())
    x = torch.randn(60, 5)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
    trainer = gradkit_core.create("gb-nn", feats, total_units=6, units_per_step=2, max_iter=30, random_state=0)
    net = trainer.fit((x, y))
    assert all(not p.requires_grad for p in feats.parameters())  # the extractor is frozen
    with torch.no_grad():
        logits = net(x)
        f = feats(x).double().numpy()
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), net.estimator.predict_proba(f), rtol=1e-4, atol=1e-6)
    with pytest.raises(TypeError, match="nn.Module"):
        gradkit_core.create("gb-nn", "not a model")


def test_boost_head_binary_from_batches_and_regression():
    from gradkit_gbnn.head import GBHeadTrainer, boost_head

    torch.manual_seed(1)
    feats = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU())
    x = torch.randn(64, 4)
    yb = (x[:, 0] > 0).long()
    batches = [(x[i:i + 16], yb[i:i + 16]) for i in range(0, 64, 16)]
    net = GBHeadTrainer(feats, total_units=4, max_iter=40, random_state=0).fit(batches)
    with torch.no_grad():
        logit = net(x)[:, 0].double().numpy()
        f = feats(x).double().numpy()
    assert net[1][-1].out_features == 1  # binary: one logit, sigmoid = P(class 1)
    np.testing.assert_allclose(expit(logit), net.estimator.predict_proba(f)[:, 1], rtol=1e-4, atol=1e-6)
    yr = x[:, 1] * 2.0
    reg = boost_head(feats, x, yr, task="regression", total_units=4, max_iter=40, random_state=0)
    with torch.no_grad():
        np.testing.assert_allclose(reg(x)[:, 0].double().numpy(), reg.estimator.predict(f), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="task"):
        GBHeadTrainer(feats, task="ranking")
    with pytest.raises(ValueError, match="rows"):
        GBHeadTrainer(feats, total_units=2).fit((x, yb[:10]))


def test_loss_formulas_match_the_authors_package():
    """Golden check against the authors' numpy code (PyPI ``gbnn`` 0.0.2; skipped when absent)."""
    ref = pytest.importorskip("gbnn.GBNN")
    rng = np.random.RandomState(3)
    yb, Fb = rng.choice([-1.0, 1.0], size=30), rng.normal(size=30)
    Ym, Fm = np.eye(4)[rng.randint(4, size=30)], rng.normal(size=(30, 4))
    ys, Fs = rng.normal(size=30), rng.normal(size=30)
    h1, hm = rng.normal(size=30), rng.normal(size=(30, 4))
    ours = {"binary": LogExponentialLoss(), "multi": MultinomialLoss(), "squared": SquaredLoss()}
    theirs = {"binary": ref.log_exponential_loss(), "multi": ref.multi_class_loss(), "squared": ref.squared_loss()}
    for key, (y, F, h) in {"binary": (yb, Fb, h1), "multi": (Ym, Fm, hm), "squared": (ys, Fs, h1)}.items():
        np.testing.assert_allclose(ours[key].init(y), theirs[key].model0(y), rtol=1e-12)
        r = ours[key].negative_gradient(y, F)
        np.testing.assert_allclose(r, theirs[key].derive(y, F), rtol=1e-12)
        assert ours[key].official_step(y, r, h) == pytest.approx(theirs[key].newton_step(y, r, h), rel=1e-12)


def test_reproduction_fold_is_consistent():
    """One CV fold of the reproduction on wine (tiny settings): the truncation curve ends at the full
    models' scores, and an MLP truncated to all of its units is the MLP itself."""
    from sklearn.neural_network import MLPClassifier

    from gradkit_gbnn.reproduce import cv_fold, load, mlp_truncated_accuracy

    out = cv_fold("wine", fold=0, n_folds=3, repeat=0, total_units=4, mlp_iters=[30], torch_epochs=2, seed=0,
                  truncation=True)
    tr = out["truncation"]
    assert tr["units"][-1] == 4
    for label in ("gbnn", "gbnn-eta0.1", "gbnn-backtracking"):
        assert tr[label][-1] == pytest.approx(out["scores"][label])
    assert tr["mlp-adam-30"][-1] == pytest.approx(out["scores"]["mlp-adam-30"])
    assert set(out["scores"]) >= {"torch-mlp-adam", "hist-gradient-boosting", "mlp-lbfgs-30", "mlp-sgd-30"}
    X, y, task = load("wine")
    assert task == "classification" and X.shape == (178, 13)
    mlp = MLPClassifier((6,), max_iter=50, random_state=0).fit(X[:100], y[:100])
    assert mlp_truncated_accuracy(mlp, X, y, 6) == pytest.approx(np.mean(mlp.predict(X) == y))
    with pytest.raises(ValueError, match="unknown dataset"):
        load("mnist")


# ---------------------------------------------------------------- sample_weight, subsample (issue 11)
def _wdata(seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(60, 3)
    y = np.sin(X[:, 0]) + 0.1 * rng.randn(60)
    w = rng.randint(0, 3, 60).astype(float)
    return X, y, w


def test_integer_sample_weight_equals_repeated_rows_regression():
    """Weight k == the row repeated k times (weight 0 == the row removed), as scikit-learn estimators promise.
    alpha=0: scikit-learn's MLP scales its L2 penalty by the row count, not by the weight sum."""
    X, y, w = _wdata()
    kw = dict(total_units=1, subsample=1.0, max_iter=60, alpha=0.0, random_state=1)
    a = GBNNRegressor(**kw).fit(X, y, sample_weight=w)
    rep = w.astype(int)
    b = GBNNRegressor(**kw).fit(np.repeat(X, rep, axis=0), np.repeat(y, rep))
    np.testing.assert_allclose(a.init_, [np.average(y, weights=w)], rtol=1e-12)
    np.testing.assert_allclose(a.init_, b.init_, rtol=1e-12)
    np.testing.assert_allclose(a.predict(X), b.predict(X), atol=1e-5)
    unweighted = GBNNRegressor(**kw).fit(X, y)
    assert np.abs(unweighted.predict(X) - a.predict(X)).max() > 1e-2  # the weights do change the fit


def test_integer_sample_weight_equals_repeated_rows_classification():
    X, _, w = _wdata(1)
    yc = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "a", "b")
    kw = dict(total_units=3, subsample=1.0, max_iter=60, alpha=0.0, random_state=1)
    a = GBNNClassifier(**kw).fit(X, yc, sample_weight=w)
    rep = w.astype(int)
    b = GBNNClassifier(**kw).fit(np.repeat(X, rep, axis=0), np.repeat(yc, rep))
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-4)
    np.testing.assert_allclose(a.train_loss_, b.train_loss_, rtol=1e-4)


@pytest.mark.parametrize("bad,match", [(-np.ones(60), "(?i)negative"), (np.full(60, np.nan), "NaN|finite"),
                                       (np.ones(59), "59|60|shape|length|samples"), (np.zeros(60), "0|zero")])
def test_bad_sample_weight_is_a_clear_error(bad, match):
    X, y, _ = _wdata()
    with pytest.raises(ValueError, match=match):
        GBNNRegressor(total_units=1, max_iter=5).fit(X, y, sample_weight=bad)


def test_subsample_that_rounds_to_zero_rows_is_an_error():
    X, y, _ = _wdata()
    with pytest.raises(ValueError, match="rounds to 0 rows"):
        GBNNRegressor(total_units=1, subsample=0.01, max_iter=5).fit(X, y)   # int(0.01 * 60) = 0
    est = GBNNRegressor(total_units=1, subsample=1 / 60, max_iter=5, random_state=0).fit(X, y)  # 1 row is fine
    assert est.n_estimators_ == 1
