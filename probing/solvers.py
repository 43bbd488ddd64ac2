"""Multinomial logistic-regression probes for many cells (site, layer, head) at once.

Every solver minimises the same objective as scikit-learn's ``LogisticRegression``::

    mean_i CE(softmax(W x_i + b), y_i) + ||W||^2 / (2 C n)        (b is not penalised)

on standardised features (zero mean, unit variance per dimension, train statistics).
With two classes the problem is binary logistic regression (one weight row, as in
scikit-learn); with more it is multinomial (one row per class).

Two solvers share one interface, ``fit(X, y, n_classes) -> ProbeFit``:

- ``sklearn``: the reference; one ``LogisticRegression`` per cell (joblib over cells).
- ``fast``: all cells of a batch as one batched problem in torch. A Newton method on a
  weighted subsample (which keeps every row of the rare classes) gives a starting point
  close to the optimum; Newton steps on the full data with the subsample's Hessian then
  converge in a few passes over the data. It stops on the same criterion as
  scikit-learn's ``newton-cg`` (largest absolute gradient entry <= tol). The full data is
  read in row chunks (:mod:`probing.stream`): the standardisation statistics, the
  objective, its gradient and Hessian are sums over rows accumulated chunk by chunk, so
  memory depends on the chunk size, not on the number of rows.

Weights come back in the space of the raw (unstandardised) vectors, so
``logits = x @ coef.T + intercept`` holds for a stored vector ``x``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from probing.stream import Vectors, as_vectors

SOLVERS = ("sklearn", "fast")


@dataclass
class ProbeFit:
    """Fitted probes of ``n_cells`` cells.

    coef: [n_cells, n_classes, d] and intercept: [n_cells, n_classes], raw feature space
    (binary problems store the fitted row as class 1 and zeros for class 0);
    n_iter: [n_cells] iterations the solver used.
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: np.ndarray

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Logits [n_cells, n, n_classes] for raw vectors X [n_cells, n, d]."""
        return np.matmul(X, self.coef.transpose(0, 2, 1)) + self.intercept[:, None, :]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class ids [n_cells, n] for raw vectors X [n_cells, n, d]."""
        return self.decision(X).argmax(-1)


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise each cell: X [n_cells, n, d] -> (Xs, mean [n_cells, d], scale [n_cells, d])."""
    X = np.asarray(X, dtype=np.float64)
    mean, scale = standard_scale(as_vectors(X))
    Xs = (X - mean[:, None, :]) / scale[:, None, :]
    return Xs.astype(np.float32), mean, scale


def standard_scale(X: Vectors) -> tuple[np.ndarray, np.ndarray]:
    """Train mean and scale [n_cells, d] of the standardisation of X [n_cells, n, d], read
    chunk by chunk (a constant dimension keeps scale 1)."""
    mean, scale = X.moments()
    scale[scale < 1e-12] = 1.0
    return mean, scale


def _to_raw(coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
            scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn weights on standardised features into weights on the raw features."""
    raw = coef / scale[:, None, :]
    return raw, intercept - np.einsum("ckd,cd->ck", raw, mean)


def _check(X: np.ndarray | Vectors, y: np.ndarray, n_classes: int) -> None:
    if len(X.shape) != 3 or X.shape[1] != len(y):
        raise ValueError(f"X must be [n_cells, n, d] with n = len(y); got {X.shape}, {len(y)}")
    if n_classes < 2 or len(np.unique(y)) != n_classes or y.min() < 0 or y.max() >= n_classes:
        raise ValueError("y must hold every class id 0..n_classes-1 (at least two classes)")


# ----------------------------------------------------------------------------- sklearn

def _fit_one_sklearn(X: np.ndarray, y: np.ndarray, C: float, solver: str, tol: float,
                     max_iter: int) -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, solver=solver, tol=tol, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: logit of class 1 against class 0
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return coef, intercept, int(np.max(model.n_iter_))


def fit_sklearn(X: np.ndarray | Vectors, y: np.ndarray, n_classes: int, C: float = 1.0,
                solver: str = "newton-cg", tol: float = 1e-4, max_iter: int = 100,
                n_jobs: int = 1) -> ProbeFit:
    """Reference probes: one scikit-learn LogisticRegression per cell.

    X: [n_cells, n, d] raw vectors (Vectors are read into memory whole); y: [n] class ids
    0..n_classes-1 (shared by every cell); solver: 'newton-cg' or 'lbfgs'; n_jobs: joblib
    workers over cells.
    """
    from joblib import Parallel, delayed

    X, y = as_vectors(X).array(), np.asarray(y)
    _check(X, y, n_classes)
    Xs, mean, scale = standardise(X)
    if n_jobs == 1:
        out = [_fit_one_sklearn(x, y, C, solver, tol, max_iter) for x in Xs]
    else:
        out = Parallel(n_jobs=n_jobs)(delayed(_fit_one_sklearn)(x, y, C, solver, tol, max_iter)
                                      for x in Xs)
    coef = np.stack([o[0] for o in out])
    intercept = np.stack([o[1] for o in out])
    coef, intercept = _to_raw(coef, intercept, mean, scale)
    return ProbeFit(coef, intercept, np.array([o[2] for o in out]))


# ----------------------------------------------------------------------------- fast (torch)

class _Problem:
    """A batch of cells on standardised features with a bias column, in torch.

    X: [c, n, e] (e = d + 1, last column ones); y: [n]; weight: [n] row weights or None.
    Parameters W are [c, e, m] with m = n_classes (multinomial) or 1 (binary: the logit
    of class 1, class 0 fixed at zero). ``n`` normalises the data term: the objective is
    sum_i w_i CE_i / n + lam/2 ||W[:, :-1]||^2.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float,
                 weight: torch.Tensor | None = None, n: float | None = None):
        self.X, self.y, self.lam = X, y, lam
        self.binary = n_classes == 2
        self.w = weight
        self.n = n if n is not None else float(X.shape[1])
        self.pen = _penalised(X.shape[2], X.dtype)
        # class sums S[c, a, k] = sum_{i: y_i = k} w_i x_ia make sum_i w_i z_{i, y_i} = <S, W>
        onehot = torch.nn.functional.one_hot(y, n_classes).to(X.dtype)
        if weight is not None:
            onehot = onehot * weight.view(-1, 1)
        self.S = torch.einsum("cna,nk->cak", X, onehot)
        if self.binary:
            self.S = self.S[:, :, 1:].contiguous()

    def _data_term(self, W: torch.Tensor, cells: torch.Tensor,
                   want_probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """sum_i w_i lse_i - <S, W> per cell [c], and softmax [c, n, m] if asked."""
        Z = torch.bmm(self.X[cells], W)
        if self.binary:
            Z = torch.cat([torch.zeros_like(Z), Z], dim=2)
        top = Z.amax(2, keepdim=True)
        Z.sub_(top).exp_()
        total = Z.sum(2, keepdim=True)
        lse = (total.log() + top).squeeze(2)
        lse = lse @ self.w if self.w is not None else lse.sum(1)
        value = lse - (self.S[cells] * W).sum((1, 2))
        if not want_probs:
            return value, None
        P = Z.div_(total)
        return value, (P[:, :, 1:] if self.binary else P)

    def data_grad(self, W: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Unnormalised data term [c] and its gradient [c, e, m] (no penalty)."""
        value, P = self._data_term(W, cells, True)
        X = self.X[cells]
        Pw = P * self.w.view(1, -1, 1) if self.w is not None else P
        return value, torch.bmm(X.transpose(1, 2), Pw) - self.S[cells]

    def data_hessian(self, W: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """sum_i w_i (x_i x_i^T) kron (diag p_i - p_i p_i^T), [c, e*m, e*m] (no penalty)."""
        X, P = self.X[cells], self._data_term(W, cells, True)[1]
        c, n, e = X.shape
        m = P.shape[2]
        Xw = X * self.w.view(1, -1, 1) if self.w is not None else X
        XX = (Xw.unsqueeze(3) * X.unsqueeze(2)).reshape(c, n, e * e)
        diag = torch.bmm(XX.transpose(1, 2), P).view(c, e, e, m)  # [c, a, b, k]
        hess = torch.zeros(c, e, m, e, m, dtype=X.dtype)
        ar = torch.arange(m)
        hess[:, :, ar, :, ar] = diag.permute(3, 0, 1, 2)
        hess = hess.view(c, e * m, e * m)
        root = self.w.sqrt().view(1, -1, 1, 1) if self.w is not None else 1.0
        Zs = (X.unsqueeze(3) * P.unsqueeze(2) * root).reshape(c, n, e * m)
        return hess - torch.bmm(Zs.transpose(1, 2), Zs)

    def loss_grad(self, W: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Objective [c] and gradient [c, e, m]."""
        return _objective(*self.data_grad(W, cells), W, self.n, self.lam, self.pen)

    def hessian(self, W: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Hessian [c, e*m, e*m] of the objective at W [c, e, m]."""
        return _with_ridge(self.data_hessian(W, cells), self.n, self.lam, self.pen)


class _Chunked:
    """The objective of :class:`_Problem` on rows read chunk by chunk: every evaluation
    makes one pass over ``X`` (probing.stream.Vectors), standardising each chunk with the
    given train statistics, so memory is bounded by the chunk size."""

    def __init__(self, X: Vectors, y: np.ndarray, n_classes: int, lam: float,
                 mean: np.ndarray, scale: np.ndarray):
        self.X, self.y, self.n_classes, self.lam = X, y, n_classes, lam
        self.mean, self.scale = mean, scale
        self.n = float(X.n)
        self.pen = _penalised(X.d + 1, torch.float32)

    def _parts(self, cells: torch.Tensor) -> Iterator[tuple[_Problem, torch.Tensor]]:
        """(problem of one chunk's rows for ``cells``, local cell ids) per chunk."""
        picked = cells.numpy()
        local = torch.arange(len(picked))
        for part, X in self.X.chunks(picked):
            Xt = _design(X, self.mean[picked], self.scale[picked])
            yield _Problem(Xt, torch.from_numpy(self.y[part]), self.n_classes, self.lam,
                           n=self.n), local

    def loss_grad(self, W: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Objective [c] and gradient [c, e, m], summed over the chunks."""
        value, grad = 0.0, 0.0
        for problem, local in self._parts(cells):
            v, g = problem.data_grad(W, local)
            value, grad = value + v, grad + g
        return _objective(value, grad, W, self.n, self.lam, self.pen)

    def hessian(self, W: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Hessian [c, e*m, e*m] of the objective, summed over the chunks."""
        total = sum(problem.data_hessian(W, local) for problem, local in self._parts(cells))
        return _with_ridge(total, self.n, self.lam, self.pen)


def _penalised(e: int, dtype: torch.dtype) -> torch.Tensor:
    """[e, 1]: 1 for the weights, 0 for the (unpenalised) bias row."""
    pen = torch.ones(e, 1, dtype=dtype)
    pen[-1] = 0.0
    return pen


def _objective(value: torch.Tensor, grad: torch.Tensor, W: torch.Tensor, n: float, lam: float,
               pen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective [c] and gradient [c, e, m] from the summed data term and its gradient."""
    loss = value / n + 0.5 * lam * (pen * W * W).sum((1, 2))
    return loss, grad / n + lam * pen * W


def _with_ridge(hess: torch.Tensor, n: float, lam: float, pen: torch.Tensor) -> torch.Tensor:
    """The objective's Hessian [c, p, p] from the summed data Hessian."""
    e, m = pen.shape[0], hess.shape[1] // pen.shape[0]
    # the bias is unpenalised and the multinomial logits are shift-invariant: a tiny
    # ridge keeps every system solvable without moving the optimum noticeably
    ridge = (lam * pen).expand(e, m).reshape(-1) + 1e-6
    return hess / n + torch.diag_embed(ridge).unsqueeze(0)


def _design(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """Standardised vectors with a bias column: X [c, r, d] -> [c, r, d+1] float32."""
    Xs = ((X - mean[:, None, :]) / scale[:, None, :]).astype(np.float32)
    ones = np.ones((*Xs.shape[:2], 1), np.float32)
    return torch.from_numpy(np.concatenate([Xs, ones], axis=2))


def _solve(hess: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Newton direction -H^-1 g per cell: hess [c, p, p], grad [c, e, m] -> [c, e, m]."""
    factor, info = torch.linalg.cholesky_ex(hess)
    if bool((info > 0).any()):
        return -torch.linalg.lstsq(hess, grad.reshape(len(grad), -1, 1)).solution.view_as(grad)
    return -torch.cholesky_solve(grad.reshape(len(grad), -1, 1), factor).view_as(grad)


def _inverse(hess: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch of symmetric positive definite matrices [c, p, p]."""
    factor, info = torch.linalg.cholesky_ex(hess)
    if bool((info > 0).any()):
        return torch.linalg.pinv(hess, hermitian=True)
    return torch.cholesky_inverse(factor)


def _line_search(problem: _Problem, W: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor,
                 cells: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Backtracking (Armijo) along ``step`` [a, e, m] for ``cells`` [a].

    Returns (accepted [a] bool, new W [a, e, m], loss [a], grad [a, e, m]); rows that are
    not accepted keep their old values.
    """
    g = grad[cells]
    slope = (g * step).sum((1, 2))
    new_w, new_loss, new_grad = W[cells].clone(), loss[cells].clone(), g.clone()
    accepted = torch.zeros(len(cells), dtype=torch.bool)
    t = torch.ones(len(cells), dtype=W.dtype)
    todo = torch.arange(len(cells))
    for _ in range(30):
        sel = cells[todo]
        trial = W[sel] + t[todo].view(-1, 1, 1) * step[todo]
        res = problem.loss_grad(trial, sel)
        old = loss[sel]
        # Armijo; near the optimum float rounding hides the decrease, so a step that
        # keeps the objective within rounding and shrinks the gradient is taken too
        ok = res[0] <= old + 1e-4 * t[todo] * slope[todo]
        flat = (res[0] - old).abs() <= 1e-6 * old.abs().clamp(min=1.0)
        ok |= flat & (res[1].abs().amax((1, 2)) < g[todo].abs().amax((1, 2)))
        done = todo[ok]
        new_w[done], new_loss[done], new_grad[done] = trial[ok], res[0][ok], res[1][ok]
        accepted[done] = True
        todo = todo[~ok]
        if len(todo) == 0:
            break
        t[todo] *= 0.5
    return accepted, new_w, new_loss, new_grad


def _newton(problem: _Problem, W: torch.Tensor, tol: float, max_iter: int,
            hess: torch.Tensor | None = None, final_hessian: bool = False
            ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor | None]:
    """Minimise per cell until max|grad| <= tol; W [c, e, m] is the start.

    Without ``hess``: Newton steps with the exact Hessian (computed once per step, for the
    cells still moving). With ``hess`` [c, p, p] (an approximation, e.g. from a
    subsample): quasi-Newton (BFGS) steps starting from it, so one pass over the data per
    step. Returns (W, n_iter [c], the exact Hessian at the end if ``final_hessian``, else
    the given one).
    """
    c, e, m = W.shape
    exact = hess is None
    cells = torch.arange(c)
    loss, grad = problem.loss_grad(W, cells)
    if not exact:
        inv = _inverse(hess)
    n_iter = np.zeros(c, dtype=np.int64)
    active = torch.arange(c)
    for _ in range(max_iter):
        active = active[grad[active].abs().amax((1, 2)) > tol]
        if len(active) == 0:
            break
        n_iter[active.numpy()] += 1
        if exact:
            step = _solve(problem.hessian(W[active], active), grad[active])
        else:
            step = -torch.bmm(inv[active], grad[active].reshape(len(active), -1, 1))
            step = step.view(-1, e, m)
        ok, new_w, new_loss, new_grad = _line_search(problem, W, loss, grad, active, step)
        if not exact:
            _bfgs_update(inv, active[ok], (new_w - W[active])[ok],
                         (new_grad - grad[active])[ok])
        acc = active[ok]
        W[acc], loss[acc], grad[acc] = new_w[ok], new_loss[ok], new_grad[ok]
        active = acc  # a cell with no acceptable step is as converged as rounding allows
    if exact and final_hessian:
        hess = problem.hessian(W, cells)
    return W, n_iter, hess


def _bfgs_update(inv: torch.Tensor, cells: torch.Tensor, s: torch.Tensor,
                 y: torch.Tensor) -> None:
    """BFGS update of inverse Hessians ``inv[cells]`` with steps s and gradient changes y."""
    s = s.reshape(len(cells), -1, 1)
    y = y.reshape(len(cells), -1, 1)
    sy = (s * y).sum((1, 2))
    good = sy > 1e-10 * (s * s).sum((1, 2)).sqrt() * (y * y).sum((1, 2)).sqrt()
    cells, s, y, sy = cells[good], s[good], y[good], sy[good]
    if len(cells) == 0:
        return
    H = inv[cells]
    rho = (1.0 / sy).view(-1, 1, 1)
    Hy = torch.bmm(H, y)
    yHy = (y * Hy).sum((1, 2)).view(-1, 1, 1)
    ss = torch.bmm(s, s.transpose(1, 2))
    cross = torch.bmm(Hy, s.transpose(1, 2))
    inv[cells] = H - rho * (cross + cross.transpose(1, 2)) + (rho + rho * rho * yHy) * ss


def _warm_rows(y: np.ndarray, n_classes: int, n_sub: int, rng: np.random.Generator,
               min_rows: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A weighted subsample of about ``n_sub`` rows that keeps >= min_rows of every class.

    Returns (rows [r], weights [r]); weighted sums over the rows estimate sums over all rows.
    """
    counts = np.bincount(y, minlength=n_classes)
    rate = np.minimum(1.0, np.maximum(n_sub / len(y), min_rows / np.maximum(counts, 1)))
    rows = np.flatnonzero(rng.random(len(y)) < rate[y])
    return rows, 1.0 / rate[y[rows]]


def _start(init: ProbeFit, mean: np.ndarray, scale: np.ndarray, binary: bool) -> torch.Tensor:
    """Parameters [c, d+1, m] on standardised features equal to raw-space probes ``init``
    (coef [c, n_classes, d], finite intercept [c, n_classes])."""
    W = np.concatenate([init.coef * scale[:, None, :],
                        (init.intercept + np.einsum("ckd,cd->ck", init.coef, mean))[..., None]],
                       axis=2)  # [c, n_classes, d+1]
    if binary:
        W = W[:, 1:] - W[:, :1]
    return torch.from_numpy(W.transpose(0, 2, 1).astype(np.float32)).contiguous()


def fit_fast(X: np.ndarray | Vectors, y: np.ndarray, n_classes: int, C: float = 1.0,
             tol: float = 1e-4, max_iter: int = 100, n_sub: int = 2048, seed: int = 0,
             init: ProbeFit | None = None) -> ProbeFit:
    """Batched probes for all cells at once (see the module docstring).

    X: [n_cells, n, d] raw vectors, an array or probing.stream.Vectors read chunk by chunk
    (every pass over the data reads one chunk at a time); y: [n] class ids
    0..n_classes-1; n_sub: rows of the weighted subsample that gives the warm start and
    the Hessian approximation (the full data is used with exact Newton steps when it is not
    much larger); init: probes of the same classes (e.g. fitted on part of the data) to
    start from instead of zero weights; the optimum is the same, only reached sooner.
    """
    X, y = as_vectors(X), np.asarray(y, dtype=np.int64)
    _check(X, y, n_classes)
    mean, scale = standard_scale(X)
    cells, n, d = X.shape
    lam = 1.0 / (C * n)
    W = (torch.zeros(cells, d + 1, 1 if n_classes == 2 else n_classes, dtype=torch.float32)
         if init is None else _start(init, mean, scale, n_classes == 2))
    full = _Chunked(X, y, n_classes, lam, mean, scale)
    if n > 3 * n_sub:
        rows, weight = _warm_rows(y, n_classes, n_sub, np.random.default_rng(seed))
        sub = _Problem(_design(X.subset(rows).array(), mean, scale), torch.from_numpy(y[rows]),
                       n_classes, lam, torch.from_numpy(weight).float(), n=float(weight.sum()))
        W, it_sub, hess = _newton(sub, W, tol, max_iter, final_hessian=True)
        W, n_iter, _ = _newton(full, W, tol, max_iter, hess=hess)
    else:
        W, n_iter, _ = _newton(full, W, tol, max_iter)
    coef = W.double().numpy().transpose(0, 2, 1)  # [cells, m, d+1]
    if coef.shape[1] == 1:
        coef = np.concatenate([np.zeros_like(coef), coef], axis=1)
    coef, intercept = _to_raw(coef[:, :, :d], coef[:, :, d], mean, scale)
    return ProbeFit(coef, intercept, n_iter)


def fit_probes(X: np.ndarray | Vectors, y: np.ndarray, n_classes: int, solver: str = "fast",
               C: float = 1.0, n_jobs: int = 1, seed: int = 0,
               init: ProbeFit | None = None) -> ProbeFit:
    """Fit one probe per cell with the named solver ('sklearn' or 'fast'); ``init``: a
    starting point the fast solver uses (the reference always starts from zero)."""
    if solver == "sklearn":
        return fit_sklearn(X, y, n_classes, C=C, n_jobs=n_jobs)
    if solver == "fast":
        return fit_fast(X, y, n_classes, C=C, seed=seed, init=init)
    raise ValueError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")


def fit_seen_classes(X: np.ndarray | Vectors, y: np.ndarray, n_classes: int,
                     init: ProbeFit | None = None, **options) -> ProbeFit:
    """:func:`fit_probes` on the classes that occur in y [n], returned with all n_classes.

    Randomly drawn labels or a small portion of the data may lack some classes; those get
    zero weights and intercept -inf, so the probe never predicts them (probability 0).
    A single class gives the probe that always predicts it. X: [n_cells, n, d]; init: an
    earlier fit of this kind to start from (its classes absent here are dropped, classes
    it lacks start below all others).
    """
    seen, y_seen = np.unique(np.asarray(y), return_inverse=True)
    cells, _, d = X.shape
    coef = np.zeros((cells, n_classes, d))
    intercept = np.full((cells, n_classes), -np.inf)
    if len(seen) == 1:
        intercept[:, seen[0]] = 0.0
        return ProbeFit(coef, intercept, np.zeros(cells, dtype=np.int64))
    if init is not None:
        start = init.intercept[:, seen]
        new = ~np.isfinite(start)
        floor = np.where(new, np.inf, start).min(1, keepdims=True) - 1.0
        init = ProbeFit(np.where(new[..., None], 0.0, init.coef[:, seen]),
                        np.where(new, np.where(np.isfinite(floor), floor, 0.0), start),
                        init.n_iter)
    fit = fit_probes(X, y_seen, len(seen), init=init, **options)
    coef[:, seen], intercept[:, seen] = fit.coef, fit.intercept
    return ProbeFit(coef, intercept, fit.n_iter)
