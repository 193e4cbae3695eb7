"""GBNN: a one-hidden-layer neural network trained sequentially by gradient boosting.

Emami & Martinez-Munoz, "Sequential Training of Neural Networks with Gradient Boosting"
(arXiv 1909.12098).  Notation follows the paper / the authors' code:

* ``F_0 = argmin_c sum_i L(y_i, c)`` (squared: ``mean(y)``; binary log-exponential loss with
  ``y in {-1, 1}``: ``1/2 log((1 + ybar) / (1 - ybar))``; multinomial: ``0``).
* for ``t = 1..T`` (``T = total_units // units_per_step``):

  - pseudo-residuals ``r = -dL/dF`` at ``F_{t-1}``;
  - a one-hidden-layer regressor ``h_t`` with ``J = units_per_step`` hidden units is fitted to
    ``r`` on a random subsample drawn without replacement (scikit-learn ``MLPRegressor``);
  - a Newton step ``rho_t`` computed on the *full* training set;
  - ``F_t = F_{t-1} + eta * rho_t * h_t``.

* the ``T`` stages are one network with ``T*J`` hidden units: the input->hidden weights are
  concatenated and the output block of stage ``t`` is scaled by ``eta * rho_t``; the output bias is
  ``F_0 + sum_t eta * rho_t * b_t``.  :meth:`to_torch` exports it (binary: times 2, so that the
  output is the logit of ``p = sigmoid(2F)``).
"""

from __future__ import annotations

import copy
import numbers
import warnings
from typing import Iterator, List, Optional, Tuple

import numpy as np
from scipy.special import expit, log_softmax, logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

ACTIVATIONS = ("logistic", "tanh", "relu", "identity")
SOLVERS = ("lbfgs", "adam", "sgd")
LINE_SEARCHES = ("newton", "official", "backtracking")


# --------------------------------------------------------------------------------------- losses
class SquaredLoss:
    """``L(y, F) = (y - F)^2 / 2``; ``r = y - F``; ``d2L/dF2 = 1``, so the Newton step along ``h`` is
    the exact line search ``sum(r h) / sum(h^2)`` (the authors' code uses a fixed step 1 instead:
    ``line_search="official"``)."""

    name = "squared_error"

    def init(self, y: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
        return np.atleast_1d(np.average(y, axis=0, weights=w)).astype(float)

    def __call__(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        d = (y - F) ** 2 / 2.0
        return d if d.ndim == 1 else d.sum(axis=1)

    def negative_gradient(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        return y - F

    def newton_step(self, y: np.ndarray, r: np.ndarray, h: np.ndarray, w: Optional[np.ndarray] = None) -> float:
        return _ratio(np.sum(_w(w, r) * r * h), np.sum(_w(w, r) * h * h))

    def official_step(self, y: np.ndarray, r: np.ndarray, h: np.ndarray, w: Optional[np.ndarray] = None) -> float:
        return 1.0


class LogExponentialLoss:
    """Binary loss, ``y in {-1, 1}``: ``L(y, F) = log(1 + exp(-2 y F))``, ``P(y=1|x) = sigmoid(2F)``.

    ``r = 2y / (1 + exp(2yF))``; ``d2L/dF2 = r (2y - r)``, so the Newton step from ``F`` along ``h``
    is ``sum(r h) / sum(r h^2 (2y - r))``.
    """

    name = "log-exponential"
    n_outputs = 1

    def init(self, y: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
        ybar = float(np.average(y, weights=w))
        if not -1.0 < ybar < 1.0:
            raise ValueError("the log-exponential loss needs both classes in y (mean label in (-1, 1))")
        return np.array([0.5 * np.log((1.0 + ybar) / (1.0 - ybar))])

    def __call__(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, -2.0 * y * F)

    def negative_gradient(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        return 2.0 * y * expit(-2.0 * y * F)  # = 2y / (1 + exp(2yF)), without overflow

    def newton_step(self, y: np.ndarray, r: np.ndarray, h: np.ndarray, w: Optional[np.ndarray] = None) -> float:
        ww = _w(w, r)
        return _ratio(np.sum(ww * r * h), np.sum(ww * r * h * h * (2.0 * y - r)))

    official_step = newton_step

    @staticmethod
    def proba(F: np.ndarray) -> np.ndarray:
        p1 = expit(2.0 * F)
        return np.column_stack([1.0 - p1, p1])


class MultinomialLoss:
    """K-class cross-entropy on one-hot ``y``: ``L(y, F) = -sum_k y_k F_k + logsumexp(F)``.

    ``r = y - softmax(F)``; the step is the authors' diagonal Newton step
    ``sum(h r) / sum(h^2 p (1 - p))`` (the cross-class terms of the Hessian are dropped).
    """

    name = "multinomial"

    def init(self, y: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
        return np.zeros(y.shape[1])

    def __call__(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        return -(y * F).sum(axis=1) + logsumexp(F, axis=1)

    def negative_gradient(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        return y - softmax(F, axis=1)

    def newton_step(self, y: np.ndarray, r: np.ndarray, h: np.ndarray, w: Optional[np.ndarray] = None) -> float:
        p = y - r
        ww = 1.0 if w is None else w[:, None]
        return _ratio(np.sum(ww * h * r), np.sum(ww * h * h * p * (1.0 - p)))

    official_step = newton_step

    @staticmethod
    def proba(F: np.ndarray) -> np.ndarray:
        return np.exp(log_softmax(F, axis=1))


def _w(w: Optional[np.ndarray], like: np.ndarray):
    """Sample weights broadcast against a per-sample array (1-D, or 2-D for several outputs); None: 1."""
    if w is None:
        return 1.0
    return w if like.ndim == 1 else w[:, None]


def _ratio(num: float, den: float) -> float:
    """Newton ratio; a stage that predicts 0 everywhere (zero curvature) gets step 0."""
    if not np.isfinite(num) or not np.isfinite(den) or den <= 0.0:
        return 0.0
    return float(num / den)


def activation(name: str, z: np.ndarray) -> np.ndarray:
    if name == "logistic":
        return expit(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "identity":
        return z
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


# ------------------------------------------------------------------------------------ estimator
class _BaseGBNN(BaseEstimator):
    """Shared fitting code; see :class:`GBNNClassifier` / :class:`GBNNRegressor`."""

    def __init__(self, total_units: int = 200, units_per_step: int = 1, eta: float = 1.0,
                 subsample: float = 0.5, solver: str = "lbfgs", max_iter: int = 200, tol: float = 0.0,
                 alpha: float = 1e-4, learning_rate_init: float = 1e-3, activation: str = "logistic",
                 loss: str = "auto", line_search: str = "newton", random_state=None):
        self.total_units = total_units
        self.units_per_step = units_per_step
        self.eta = eta
        self.subsample = subsample
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.activation = activation
        self.loss = loss
        self.line_search = line_search
        self.random_state = random_state

    # ----------------------------------------------------------------- checks
    def _check_params(self) -> int:
        def _int(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")
            return int(v)

        total, per = _int("total_units", 1), _int("units_per_step", 1)
        _int("max_iter", 1)
        n_stages = total // per
        if n_stages < 1:
            raise ValueError(f"total_units // units_per_step is the number of boosting stages (n_estimators) and "
                             f"must be >= 1, got {total} // {per} = {n_stages}")
        for name in ("eta", "learning_rate_init"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("tol", "alpha"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.subsample, numbers.Real) or not 0.0 < self.subsample <= 1.0:
            raise ValueError(f"subsample must be in (0, 1], got {self.subsample!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")
        if self.line_search not in LINE_SEARCHES:
            raise ValueError(f"unknown line_search {self.line_search!r}; expected one of {LINE_SEARCHES}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; expected one of {SOLVERS}")
        return n_stages

    # ----------------------------------------------------------------- fitting
    def _stage_regressor(self, seed: int) -> MLPRegressor:
        return MLPRegressor(hidden_layer_sizes=(self.units_per_step,), activation=self.activation,
                            solver=self.solver, alpha=self.alpha, max_iter=self.max_iter, tol=self.tol,
                            learning_rate_init=self.learning_rate_init, n_iter_no_change=self.max_iter,
                            random_state=seed)

    def _boost(self, X: np.ndarray, Y: np.ndarray, loss_fn, sample_weight=None) -> None:
        n_stages = self._check_params()
        rng = check_random_state(self.random_state)
        n = X.shape[0]
        n_sub = int(self.subsample * n)
        if n_sub < 1:
            raise ValueError(f"subsample={self.subsample!r} of n_samples = {n} rounds to {n_sub} rows; each "
                             f"stage needs at least 1 (use subsample >= {1.0 / n:.3g} or more samples)")
        w = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not np.all(np.isfinite(w)):
            raise ValueError("sample_weight contains NaN or inf; expected finite non-negative weights")
        if not w.sum() > 0:
            raise ValueError("sample_weight sums to 0; at least one sample needs a positive weight")
        self._loss_fn = loss_fn
        self.init_ = loss_fn.init(Y, w)
        F = np.tile(self.init_, (n, 1)) if Y.ndim == 2 else np.full(n, self.init_[0])
        self.init_loss_ = float(np.average(loss_fn(Y, F), weights=w))
        self.estimators_: List[MLPRegressor] = []
        self.stage_params_: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        rhos, losses = [], []
        self.n_iter_no_convergence_ = 0
        for _ in range(n_stages):
            r = loss_fn.negative_gradient(Y, F)
            if n_sub < n:
                idx = rng.choice(n, size=n_sub, replace=False)
                X_i, r_i, w_i = X[idx], r[idx], w[idx]
            else:
                X_i, r_i, w_i = X, r, w
            reg = self._stage_regressor(int(rng.randint(np.iinfo(np.int32).max)))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                if sample_weight is None:
                    reg.fit(X_i, r_i)
                elif w_i.sum() > 0:
                    reg.fit(X_i, r_i, sample_weight=w_i)
                else:
                    raise ValueError("a stage's subsample holds only zero-weight samples; raise subsample or give "
                                     "more samples a positive sample_weight")
            self.n_iter_no_convergence_ += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            W1, b1 = reg.coefs_[0].astype(float), reg.intercepts_[0].astype(float)
            W2, b2 = reg.coefs_[1].astype(float), reg.intercepts_[1].astype(float)
            h = activation(self.activation, X @ W1 + b1) @ W2 + b2  # == reg.predict(X), on the FULL set
            if Y.ndim == 1:
                h = h[:, 0]
            rho = (loss_fn.official_step if self.line_search == "official" else loss_fn.newton_step)(Y, r, h, w)
            if self.line_search == "backtracking":  # halve the Newton step until the training loss does not rise
                before = np.sum(w * loss_fn(Y, F))
                for _ in range(60):
                    if np.sum(w * loss_fn(Y, F + self.eta * rho * h)) <= before:
                        break
                    rho *= 0.5
                else:
                    rho = 0.0
            F = F + self.eta * rho * h
            rhos.append(rho)
            losses.append(float(np.average(loss_fn(Y, F), weights=w)))
            self.estimators_.append(reg)
            self.stage_params_.append((W1, b1, W2, b2))
        self.rhos_ = np.asarray(rhos)
        self.steps_ = self.eta * self.rhos_
        self.train_loss_ = np.asarray(losses)
        self.n_estimators_ = n_stages
        self.n_iter_ = n_stages  # boosting stages, as in scikit-learn's gradient boosting
        self._assemble()

    def _assemble(self) -> None:
        """Fold the stages into one network: ``F(x) = act(x W1 + b1) W2 + b2``."""
        W1 = np.concatenate([p[0] for p in self.stage_params_], axis=1)
        b1 = np.concatenate([p[1] for p in self.stage_params_])
        W2 = np.concatenate([s * p[2] for s, p in zip(self.steps_, self.stage_params_)], axis=0)
        b2 = self.init_ + sum(s * p[3] for s, p in zip(self.steps_, self.stage_params_))
        self.coefs_ = [W1, W2]
        self.intercepts_ = [b1, np.asarray(b2, dtype=float)]

    @property
    def n_units_(self) -> int:
        check_is_fitted(self, "coefs_")
        return int(self.coefs_[0].shape[1])

    # ----------------------------------------------------------------- prediction
    def _raw(self, X) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X

    def _raw_predict(self, X) -> np.ndarray:
        """Raw score ``F(x)`` of the assembled network (binary: ``P(y=1) = sigmoid(2F)``)."""
        X = self._raw(X)
        F = activation(self.activation, X @ self.coefs_[0] + self.intercepts_[0]) @ self.coefs_[1] + self.intercepts_[1]
        return F[:, 0] if self._flat_output else F

    def _staged_raw(self, X) -> Iterator[np.ndarray]:
        """``F_t(x) = F_0 + sum_{s<=t} eta rho_s h_s(x)`` after each stage ``t = 1..T``, summed stage by stage."""
        X = self._raw(X)
        F = np.tile(self.init_, (X.shape[0], 1))
        for step, (W1, b1, W2, b2) in zip(self.steps_, self.stage_params_):
            F = F + step * (activation(self.activation, X @ W1 + b1) @ W2 + b2)
            yield F[:, 0].copy() if self._flat_output else F.copy()

    def truncate(self, n_units: int):
        """A copy keeping the first ``n_units`` (trained first) hidden units, i.e. the first
        ``n_units // units_per_step`` stages; the original estimator is left unchanged."""
        check_is_fitted(self, "coefs_")
        J = self.units_per_step
        if isinstance(n_units, bool) or not isinstance(n_units, numbers.Integral):
            raise TypeError(f"n_units must be an int, got {type(n_units).__name__}")
        if not J <= n_units <= self.n_units_ or n_units % J:
            raise ValueError(f"n_units must be a multiple of units_per_step={J} in [{J}, {self.n_units_}], "
                             f"got {n_units}")
        k = n_units // J
        new = copy.deepcopy(self)
        new.estimators_ = new.estimators_[:k]
        new.stage_params_ = new.stage_params_[:k]
        new.rhos_, new.steps_, new.train_loss_ = new.rhos_[:k], new.steps_[:k], new.train_loss_[:k]
        new.n_estimators_ = new.n_iter_ = k
        new._assemble()
        return new

    def to_torch(self, n_units: Optional[int] = None, dtype=None):
        """The assembled network as ``nn.Sequential(Linear, activation, Linear)``.

        Output: regression ``F``; binary one logit ``2F`` (``sigmoid`` gives ``P(y=classes_[1])``);
        multi-class ``K`` logits ``F`` (``softmax`` gives the class probabilities).
        """
        import torch
        from torch import nn

        model = self if n_units is None else self.truncate(n_units)
        check_is_fitted(model, "coefs_")
        dtype = torch.float32 if dtype is None else dtype
        mult = 2.0 if isinstance(model._loss_fn, LogExponentialLoss) else 1.0
        W1, W2 = model.coefs_
        b1, b2 = model.intercepts_
        first = nn.Linear(W1.shape[0], W1.shape[1], dtype=dtype)
        last = nn.Linear(W2.shape[0], W2.shape[1], dtype=dtype)
        act = {"logistic": nn.Sigmoid(), "tanh": nn.Tanh(), "relu": nn.ReLU(), "identity": nn.Identity()}
        with torch.no_grad():
            first.weight.copy_(torch.as_tensor(W1.T, dtype=dtype))
            first.bias.copy_(torch.as_tensor(b1, dtype=dtype))
            last.weight.copy_(torch.as_tensor(mult * W2.T, dtype=dtype))
            last.bias.copy_(torch.as_tensor(mult * b2, dtype=dtype))
        return nn.Sequential(first, act[self.activation], last)


class GBNNClassifier(ClassifierMixin, _BaseGBNN):
    """GBNN classifier (scikit-learn API).

    ``loss="auto"`` uses the log-exponential loss for two classes and the multinomial loss for more;
    ``"log-exponential"`` (two classes only) and ``"multinomial"`` (any number >= 2) force one.
    Each stage fits ``units_per_step`` hidden units (shared by all ``K`` outputs in the multinomial
    case) to the pseudo-residuals.  Fitted attributes: ``classes_``, ``init_``, ``estimators_`` (the
    stage ``MLPRegressor`` s), ``rhos_`` (Newton steps), ``steps_ = eta * rhos_``, ``train_loss_``
    (mean training loss after each stage), ``coefs_`` / ``intercepts_`` (the assembled network).
    """

    def fit(self, X, y, sample_weight=None):
        """Fit on ``X, y``; ``sample_weight`` (non-negative, finite) weighs each sample's loss in ``F_0``, in the
        stage regressors' fits (on the subsample) and in the Newton steps, as scikit-learn's gradient boosting."""
        self._check_params()
        if self.loss not in ("auto", "log-exponential", "multinomial"):
            raise ValueError(f"unknown loss {self.loss!r} for GBNNClassifier; expected 'auto', 'log-exponential' "
                             f"or 'multinomial'")
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        enc = LabelEncoder()
        yi = enc.fit_transform(y)
        self.classes_ = enc.classes_
        K = len(self.classes_)
        if K < 2:
            raise ValueError(f"GBNNClassifier needs at least 2 classes in y, got 1 class ({self.classes_[0]!r})")
        loss = self.loss if self.loss != "auto" else ("log-exponential" if K == 2 else "multinomial")
        if loss == "log-exponential":
            if K != 2:
                raise ValueError(f"loss='log-exponential' is binary; y has {K} classes (use 'multinomial')")
            self._flat_output = True
            self._boost(X, 2.0 * yi - 1.0, LogExponentialLoss(), sample_weight)
        else:
            self._flat_output = False
            self._boost(X, np.eye(K)[yi], MultinomialLoss(), sample_weight)
        return self

    def _proba_of(self, F: np.ndarray) -> np.ndarray:
        return self._loss_fn.proba(F)

    def decision_function(self, X) -> np.ndarray:
        """Raw score ``F(x)`` of the assembled network: ``(n,)`` for two classes with the
        log-exponential loss (``P(classes_[1]) = sigmoid(2F)``), else ``(n, K)`` (softmax logits)."""
        return self._raw_predict(X)

    def staged_decision_function(self, X) -> Iterator[np.ndarray]:
        """``F_t(x) = F_0 + sum_{s<=t} eta rho_s h_s(x)`` after each stage, summed stage by stage."""
        yield from self._staged_raw(X)

    def predict_proba(self, X) -> np.ndarray:
        return self._proba_of(self._raw_predict(X))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def staged_predict_proba(self, X) -> Iterator[np.ndarray]:
        for F in self._staged_raw(X):
            yield self._proba_of(F)

    def staged_predict(self, X) -> Iterator[np.ndarray]:
        for P in self.staged_predict_proba(X):
            yield self.classes_[np.argmax(P, axis=1)]


class GBNNRegressor(RegressorMixin, _BaseGBNN):
    """GBNN regressor on the squared loss (scikit-learn API); ``y`` may be 1-D or 2-D (multi-output)."""

    def __init__(self, total_units: int = 200, units_per_step: int = 1, eta: float = 1.0,
                 subsample: float = 0.5, solver: str = "lbfgs", max_iter: int = 200, tol: float = 0.0,
                 alpha: float = 1e-4, learning_rate_init: float = 1e-3, activation: str = "logistic",
                 loss: str = "squared_error", line_search: str = "newton", random_state=None):
        super().__init__(total_units=total_units, units_per_step=units_per_step, eta=eta, subsample=subsample,
                         solver=solver, max_iter=max_iter, tol=tol, alpha=alpha,
                         learning_rate_init=learning_rate_init, activation=activation, loss=loss,
                         line_search=line_search, random_state=random_state)

    def fit(self, X, y, sample_weight=None):
        """Fit on ``X, y``; ``sample_weight`` as in :meth:`GBNNClassifier.fit`."""
        self._check_params()
        if self.loss != "squared_error":
            raise ValueError(f"unknown loss {self.loss!r} for GBNNRegressor; expected 'squared_error'")
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=float)
        self._flat_output = y.ndim == 1
        self._boost(X, y, SquaredLoss(), sample_weight)
        return self

    def predict(self, X) -> np.ndarray:
        """``F(x)`` of the assembled network."""
        return self._raw_predict(X)

    def staged_predict(self, X) -> Iterator[np.ndarray]:
        """``F_t(x)`` after each stage ``t = 1..T``, summed stage by stage."""
        yield from self._staged_raw(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
