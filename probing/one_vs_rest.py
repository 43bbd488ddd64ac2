"""One-vs-rest logistic-regression probes: one binary probe per tag and cell.

Each probe minimises scikit-learn's binary objective on standardised features::

    mean_i logloss(sigmoid(w . x_i + b), y_i) + ||w||^2 / (2 C n)        (b not penalised)

``sklearn`` (the reference) fits the tags one at a time with
:func:`probing.solvers.fit_probes`. ``fast`` solves all tags of a cell together: the K
problems share the rows, so one matrix product gives every tag's logits, gradient and
Hessian (one small (d+1) x (d+1) matrix per tag). Newton steps with backtracking on a
weighted subsample of the rows (which keeps at least 32 holders of every tag) give a warm
start; Newton steps on all rows then finish, stopping when every tag's largest absolute
gradient entry is <= tol, the criterion of scikit-learn's newton-cg. All rows are read a
chunk at a time (:mod:`probing.stream`): every evaluation sums the objective, gradient and
Hessians over the chunks of one cell. Weights come back in
the space of the raw stored vectors: the logit of tag k is ``x @ coef[k] + intercept[k]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from probing.solvers import fit_probes, standard_scale
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
    X = as_vectors(X)
    if seen_only:
        return _with_constant_tags(X, Y, solver, C, n_jobs, seed)
    if solver != "fast":
        return _fit_each_tag(X, Y, solver, C, n_jobs, seed)
    mean, scale = standard_scale(X)
    cells, n, d = X.shape
    lam = 1.0 / (C * n)
    targets = Y.astype(np.float32)
    sub = _warm_rows(Y, n_sub, np.random.default_rng(seed)) if n > 3 * n_sub else None
    coef, intercept = np.zeros((cells, Y.shape[1], d)), np.zeros((cells, Y.shape[1]))
    n_iter = np.zeros(cells, dtype=np.int64)
    for c in range(cells):
        cell = X.cell(c)
        W = np.zeros((d + 1, Y.shape[1]))
        if sub is not None:
            picked, weight = sub
            rows = _Rows(_with_bias(cell.subset(picked).array()[0], mean[c], scale[c]),
                         targets[picked], weight / weight.sum())
            W, _ = _newton(_Objective(lambda rows=rows: [rows], lam, d + 1), W, tol, max_iter)
        W, n_iter[c] = _newton(_Objective(_chunk_rows(cell, targets, mean[c], scale[c]), lam,
                                          d + 1), W, tol, max_iter)
        raw = W[:d].T / scale[c]                                   # [K, d]
        coef[c], intercept[c] = raw, W[d] - raw @ mean[c]
    return OneVsRest(coef, intercept, n_iter)


def _with_constant_tags(X: Vectors, Y: np.ndarray, solver: str, C: float, n_jobs: int,
                        seed: int) -> OneVsRest:
    """Fit the columns of Y that hold both values; the others get weights 0 and a bias of
    CONSTANT_LOGIT with the sign of their one value."""
    held = Y.sum(0)
    varied = (held > 0) & (held < len(Y))
    coef = np.zeros((X.shape[0], Y.shape[1], X.shape[2]))
    intercept = np.where(held > 0, CONSTANT_LOGIT, -CONSTANT_LOGIT) * np.ones((X.shape[0], 1))
    n_iter = np.zeros(X.shape[0], dtype=np.int64)
    if varied.any():
        fit = fit_one_vs_rest(X, Y[:, varied], solver, C, n_jobs, seed)
        coef[:, varied], intercept[:, varied], n_iter = fit.coef, fit.intercept, fit.n_iter
    return OneVsRest(coef, intercept, n_iter)


def _fit_each_tag(X: Vectors, Y: np.ndarray, solver: str, C: float, n_jobs: int,
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


def _with_bias(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised rows with a ones column: X [r, d] -> [r, d+1] float32."""
    Xs = ((X - mean) / scale).astype(np.float32)
    return np.concatenate([Xs, np.ones((len(Xs), 1), np.float32)], axis=1)


def _chunk_rows(cell: Vectors, targets: np.ndarray, mean: np.ndarray,
                scale: np.ndarray) -> Callable[[], Iterator[_Rows]]:
    """The rows of one cell (Vectors of one cell) as _Rows, a chunk at a time, each row
    weighing 1/n; a new pass over the chunks at every call."""
    def parts() -> Iterator[_Rows]:
        for part, X in cell.chunks():
            yield _Rows(_with_bias(X[0], mean, scale), targets[part],
                        np.full(X.shape[1], 1.0 / cell.n))
    return parts


class _Rows:
    """Some rows of K logistic regressions: X [r, e] (standardised, last column ones, the
    unpenalised bias), Y [r, K] 0/1, w [r] the rows' weights in the objective."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, w: np.ndarray):
        self.X, self.Y = X, Y
        self.w = w.astype(np.float32)[:, None]                              # [r, 1]

    def loss(self, W: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Weighted data term [k] of tags ``cols`` at weights W [e, k]."""
        Z = self.X @ W.astype(np.float32)
        per_row = np.logaddexp(np.float32(0), Z) - self.Y[:, cols] * Z
        return (self.w * per_row).sum(0, dtype=np.float64)

    def grad_hessian(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted data gradient [e, K] and Hessians [K, e, e] at W [e, K]."""
        n, e = self.X.shape
        P = expit(self.X @ W.astype(np.float32))
        grad = (self.X.T @ (self.w * (P - self.Y))).astype(np.float64)
        XX = (self.X[:, :, None] * self.X[:, None, :]).reshape(n, e * e)
        H = ((self.w * P * (1 - P)).T @ XX).astype(np.float64).reshape(-1, e, e)
        return grad, H


class _Objective:
    """K L2-penalised logistic regressions (strength lam) summed over ``parts()``, the
    rows of the problem (one pass over them per call); parameters W are [e, K]."""

    def __init__(self, parts: Callable[[], Iterable[_Rows]], lam: float, e: int):
        self.parts, self.lam = parts, lam
        self.pen = np.r_[np.ones(e - 1), 0.0][:, None]                      # [e, 1]

    def loss(self, W: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Objective [k] of tags ``cols`` at weights W [e, k]."""
        data = sum(part.loss(W, cols) for part in self.parts())
        return data + 0.5 * self.lam * (self.pen * W * W).sum(0)

    def newton_step(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gradient, Newton step), each [e, K]."""
        grad, H = 0.0, 0.0
        for part in self.parts():
            g, h = part.grad_hessian(W)
            grad, H = grad + g, H + h
        grad = grad + self.lam * self.pen * W
        H = H + np.diag(self.lam * self.pen[:, 0] + 1e-10)
        return grad, -np.linalg.solve(H, grad.T[:, :, None])[:, :, 0].T


def _newton(problem: _Objective, W: np.ndarray, tol: float, max_iter: int
            ) -> tuple[np.ndarray, int]:
    """Newton's method with backtracking from W [e, K]; returns (W, iterations)."""
    W = W.copy()
    value = problem.loss(W, np.arange(W.shape[1]))
    active = np.ones(W.shape[1], dtype=bool)
    for it in range(max_iter):
        grad, step = problem.newton_step(W)
        active &= np.abs(grad).max(0) > tol
        if not active.any():
            return W, it
        cols = np.flatnonzero(active)
        moved = _backtrack(problem, W, value, step, (grad * step).sum(0), cols)
        active[cols[~moved]] = False  # no acceptable step: as converged as rounding allows
    return W, max_iter


def _backtrack(problem: _Objective, W: np.ndarray, value: np.ndarray, step: np.ndarray,
               slope: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Armijo backtracking along ``step`` [e, K] for tags ``cols``, each with its own step
    size; updates W and value [K] in place. Returns bool [len(cols)]: moved."""
    t = np.ones(len(cols))
    todo = np.arange(len(cols))
    moved = np.zeros(len(cols), dtype=bool)
    for _ in range(30):
        k = cols[todo]
        trial = W[:, k] + t[todo] * step[:, k]
        got = problem.loss(trial, k)
        ok = got <= value[k] + 1e-4 * t[todo] * slope[k]
        W[:, k[ok]], value[k[ok]] = trial[:, ok], got[ok]
        moved[todo[ok]] = True
        todo = todo[~ok]
        if len(todo) == 0:
            break
        t[todo] *= 0.5
    return moved
