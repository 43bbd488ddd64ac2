"""One-vs-rest logistic-regression probes: one binary probe per tag and cell.

Each probe minimises scikit-learn's binary objective on standardised features::

    mean_i logloss(sigmoid(w . x_i + b), y_i) + ||w||^2 / (2 C n)        (b not penalised)

``sklearn`` (the reference) fits the tags one at a time with
:func:`probing.solvers.fit_probes`. ``fast`` solves all tags of a cell together: the K
problems share the rows, so one matrix product gives every tag's logits, gradient and
Hessian (one small (d+1) x (d+1) matrix per tag). Newton steps with backtracking on a
weighted subsample of the rows (which keeps at least 32 holders of every tag) give a warm
start; Newton steps on all rows then finish, stopping when every tag's largest absolute
gradient entry is <= tol, the criterion of scikit-learn's newton-cg. Weights come back in
the space of the raw stored vectors: the logit of tag k is ``x @ coef[k] + intercept[k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from probing.solvers import fit_probes, standardise
from probing.stream import Vectors, as_vectors

CONSTANT_LOGIT = 30.0  # the bias of a tag every training token holds (minus: none holds)


@dataclass
class OneVsRest:
    """Fitted one-vs-rest probes of ``n_cells`` cells: coef [n_cells, K, d], intercept
    [n_cells, K] (raw feature space), n_iter [n_cells] (Newton steps on all rows; the
    most over the tags for ``sklearn``)."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: np.ndarray

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Logits [n_cells, n, K] for raw vectors X [n_cells, n, d]."""
        return np.einsum("cnd,ckd->cnk", X, self.coef) + self.intercept[:, None, :]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Bool [n_cells, n, K]: the token covers each tag (logit > 0)."""
        return self.decision(X) > 0


def fit_one_vs_rest(X: np.ndarray | Vectors, Y: np.ndarray, solver: str = "fast", C: float = 1.0,
                    n_jobs: int = 1, seed: int = 0, tol: float = 1e-4, max_iter: int = 100,
                    n_sub: int = 4096, seen_only: bool = False) -> OneVsRest:
    """One binary probe per tag and cell (see the module docstring).

    X: [n_cells, n, d] raw vectors; Y: bool [n, K], every column holding both values;
    solver: 'fast' or 'sklearn'; n_sub: rows of the warm-start subsample (the fast solver
    starts on all rows when there are not much more); seen_only: a column may hold one
    value only (a control task's drawn sets), and its probe then always answers it.
    """
    X = as_vectors(X).array()
    if seen_only:
        return _with_constant_tags(X, Y, solver, C, n_jobs, seed)
    if solver != "fast":
        return _fit_each_tag(X, Y, solver, C, n_jobs, seed)
    Xs, mean, scale = standardise(X)
    n, d = Xs.shape[1], Xs.shape[2]
    lam = 1.0 / (C * n)
    targets = Y.astype(np.float32)
    sub = _warm_rows(Y, n_sub, np.random.default_rng(seed)) if n > 3 * n_sub else None
    coef, intercept = np.zeros((len(Xs), Y.shape[1], d)), np.zeros((len(Xs), Y.shape[1]))
    n_iter = np.zeros(len(Xs), dtype=np.int64)
    for c, x in enumerate(Xs):
        rows = np.concatenate([x, np.ones((n, 1), np.float32)], axis=1)
        W = np.zeros((d + 1, Y.shape[1]))
        if sub is not None:
            picked, weight = sub
            W, _ = _newton(_Problem(rows[picked], targets[picked], lam, weight), W, tol,
                           max_iter)
        W, n_iter[c] = _newton(_Problem(rows, targets, lam), W, tol, max_iter)
        raw = W[:d].T / scale[c]                                   # [K, d]
        coef[c], intercept[c] = raw, W[d] - raw @ mean[c]
    return OneVsRest(coef, intercept, n_iter)


def _with_constant_tags(X: np.ndarray, Y: np.ndarray, solver: str, C: float, n_jobs: int,
                        seed: int) -> OneVsRest:
    """Fit the columns of Y that hold both values; the others get weights 0 and a bias of
    CONSTANT_LOGIT with the sign of their one value."""
    held = Y.sum(0)
    varied = (held > 0) & (held < len(Y))
    coef = np.zeros((X.shape[0], Y.shape[1], X.shape[2]))
    intercept = np.where(held > 0, CONSTANT_LOGIT, -CONSTANT_LOGIT) * np.ones((len(X), 1))
    n_iter = np.zeros(X.shape[0], dtype=np.int64)
    if varied.any():
        fit = fit_one_vs_rest(X, Y[:, varied], solver, C, n_jobs, seed)
        coef[:, varied], intercept[:, varied], n_iter = fit.coef, fit.intercept, fit.n_iter
    return OneVsRest(coef, intercept, n_iter)


def _fit_each_tag(X: np.ndarray, Y: np.ndarray, solver: str, C: float, n_jobs: int,
                  seed: int) -> OneVsRest:
    """The reference: one two-class :func:`probing.solvers.fit_probes` per tag."""
    coef = np.zeros((X.shape[0], Y.shape[1], X.shape[2]))
    intercept = np.zeros((X.shape[0], Y.shape[1]))
    n_iter = np.zeros(X.shape[0], dtype=np.int64)
    for k in range(Y.shape[1]):
        fit = fit_probes(X, Y[:, k].astype(np.int64), 2, solver=solver, C=C, n_jobs=n_jobs,
                         seed=seed)
        coef[:, k] = fit.coef[:, 1] - fit.coef[:, 0]
        intercept[:, k] = fit.intercept[:, 1] - fit.intercept[:, 0]
        n_iter = np.maximum(n_iter, fit.n_iter)
    return OneVsRest(coef, intercept, n_iter)


def _warm_rows(Y: np.ndarray, n_sub: int, rng: np.random.Generator,
               min_rows: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A weighted subsample of about ``n_sub`` rows keeping >= min_rows holders of every tag
    (Y bool [n, K]): (rows [r], weights [r]); weighted means estimate means over all rows."""
    n = len(Y)
    tag_rate = np.minimum(1.0, min_rows / np.maximum(Y.sum(0), 1))          # [K]
    rate = np.maximum(n_sub / n, np.max(np.where(Y, tag_rate, 0.0), axis=1))  # [n]
    rows = np.flatnonzero(rng.random(n) < rate)
    return rows, 1.0 / rate[rows]


class _Problem:
    """K logistic regressions on the same rows: X [n, e] (standardised, last column ones,
    the unpenalised bias), Y [n, K] 0/1, L2 strength lam, optional row weights [n]."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, lam: float,
                 weight: np.ndarray | None = None):
        n, e = X.shape
        self.X, self.Y, self.lam = X, Y, lam
        w = np.full(n, 1.0 / n) if weight is None else weight / weight.sum()
        self.w = w.astype(np.float32)[:, None]                              # [n, 1]
        self.pen = np.r_[np.ones(e - 1), 0.0][:, None]                      # [e, 1]
        self.XX = (X[:, :, None] * X[:, None, :]).reshape(n, e * e)       # [n, e*e]

    def logits(self, W: np.ndarray) -> np.ndarray:
        return self.X @ W.astype(np.float32)

    def loss(self, W: np.ndarray, Z: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Objective [k] of tags ``cols`` at weights W [e, k], logits Z [n, k]."""
        per_row = np.logaddexp(np.float32(0), Z) - self.Y[:, cols] * Z
        return (self.w * per_row).sum(0, dtype=np.float64) + 0.5 * self.lam * (
            self.pen * W * W).sum(0)

    def newton_step(self, W: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gradient, Newton step), each [e, K]."""
        e = self.X.shape[1]
        P = expit(Z)
        grad = (self.X.T @ (self.w * (P - self.Y))).astype(np.float64) + self.lam * self.pen * W
        H = ((self.w * P * (1 - P)).T @ self.XX).astype(np.float64).reshape(-1, e, e)
        H += np.diag(self.lam * self.pen[:, 0] + 1e-10)
        return grad, -np.linalg.solve(H, grad.T[:, :, None])[:, :, 0].T


def _newton(problem: _Problem, W: np.ndarray, tol: float, max_iter: int
            ) -> tuple[np.ndarray, int]:
    """Newton's method with backtracking from W [e, K]; returns (W, iterations)."""
    W = W.copy()
    Z = problem.logits(W)
    value = problem.loss(W, Z, np.arange(W.shape[1]))
    active = np.ones(W.shape[1], dtype=bool)
    for it in range(max_iter):
        grad, step = problem.newton_step(W, Z)
        active &= np.abs(grad).max(0) > tol
        if not active.any():
            return W, it
        cols = np.flatnonzero(active)
        moved = _backtrack(problem, W, Z, value, step, (grad * step).sum(0), cols)
        active[cols[~moved]] = False  # no acceptable step: as converged as rounding allows
    return W, max_iter


def _backtrack(problem: _Problem, W: np.ndarray, Z: np.ndarray, value: np.ndarray,
               step: np.ndarray, slope: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Armijo backtracking along ``step`` [e, K] for tags ``cols``, each with its own step
    size; updates W, Z [n, K] and value [K] in place. Returns bool [len(cols)]: moved."""
    t = np.ones(len(cols))
    todo = np.arange(len(cols))
    moved = np.zeros(len(cols), dtype=bool)
    for _ in range(30):
        k = cols[todo]
        trial = W[:, k] + t[todo] * step[:, k]
        z = problem.logits(trial)
        got = problem.loss(trial, z, k)
        ok = got <= value[k] + 1e-4 * t[todo] * slope[k]
        W[:, k[ok]], Z[:, k[ok]], value[k[ok]] = trial[:, ok], z[:, ok], got[ok]
        moved[todo[ok]] = True
        todo = todo[~ok]
        if len(todo) == 0:
            break
        t[todo] *= 0.5
    return moved
