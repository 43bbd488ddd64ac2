"""Minimum description length probing: the online code of Voita & Titov (EMNLP 2020).

How many bits does it take to transmit the training labels given the vectors, when the
receiver learns the probe as the labels arrive? The train tokens are put in a seeded
random order of whole stories and cut at the paper's portions (0.1, 0.2, ..., 50, 100 % of
the tokens; a cut falls at the end of the story that reaches the share). The first portion
is sent with the uniform code; every later block is sent with the probe fitted on all the
tokens before it::

    online   = t_1 log2 K + sum_{i=1}^{P-1} sum_{j in (t_i, t_{i+1}]} -log2 p_i(y_j | x_j)
    uniform  = N log2 K                      (N train tokens, K classes)
    compression = uniform / online

A probe that has not yet seen a class gives it probability 0, which no code can use, so
each block is coded with the probe's probabilities as ``n`` pseudo-counts plus one count
per class: ``p = (n p_probe + 1) / (n + K)`` for a probe fitted on ``n`` tokens. The
smoothing fades as ``n`` grows and is the same for every solver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from probing.solvers import ProbeFit
from probing.stream import Vectors, as_vectors

# the paper's portions, in percent of the train tokens
PORTIONS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25.0, 50.0, 100.0)


@dataclass
class Portions:
    """Where the online code cuts the train tokens.

    order: [n_train] positions into the train tokens, stories in seeded random order (each
    story's tokens in story order); ends: [P] tokens in the first i+1 portions (cumulative,
    ends[-1] = n_train); stories: [P] stories in them; percent: [P] the target shares.
    """

    order: np.ndarray
    ends: np.ndarray
    stories: np.ndarray
    percent: np.ndarray


def plan_portions(train_stories: np.ndarray, seed: int,
                  percent: tuple[float, ...] = PORTIONS) -> Portions:
    """Cut the train tokens into portions of whole stories.

    train_stories: [n_train] story id of each train token. Portion i ends with the first
    story (in a seeded random order of the stories) at which the running token count
    reaches ``percent[i]`` % of the train tokens; a story longer than a share can make two
    cuts fall together (that block is then empty).
    """
    ids, inverse = np.unique(np.asarray(train_stories), return_inverse=True)
    rank = np.random.default_rng(seed).permutation(len(ids))[inverse]
    order = np.argsort(rank, kind="stable")
    cumulative = np.cumsum(np.bincount(rank, minlength=len(ids)))
    shares = np.asarray(percent, dtype=np.float64) / 100 * cumulative[-1]
    last = np.minimum(np.searchsorted(cumulative, shares, side="left"), len(ids) - 1)
    return Portions(order, cumulative[last], last + 1, np.asarray(percent, dtype=np.float64))


def uniform_codelength(n_tokens: int, n_classes: int) -> float:
    """Bits to send ``n_tokens`` labels of ``n_classes`` classes with the uniform code."""
    return float(n_tokens * np.log2(n_classes))


def block_bits(fit: ProbeFit, X: np.ndarray | Vectors, y: np.ndarray,
               n_seen: int) -> np.ndarray:
    """Bits per cell [c] to send labels y [m] of vectors X [c, m, d] (an array or Vectors,
    read chunk by chunk) with a fitted probe.

    ``fit`` has one column per class (classes it never saw have intercept -inf);
    ``n_seen``: tokens it was fitted on (the weight of its probabilities, see the module).
    """
    cells, n_classes = fit.coef.shape[:2]
    intercept = torch.from_numpy(fit.intercept.astype(np.float32))[:, None, :]
    coef = torch.from_numpy(fit.coef.astype(np.float32)).transpose(1, 2)
    y = np.asarray(y, dtype=np.int64)
    bits = np.zeros(cells)
    for part, chunk in as_vectors(X).chunks():
        logits = torch.baddbmm(intercept, torch.from_numpy(chunk), coef)
        target = torch.from_numpy(y[part]).expand(cells, -1)[..., None]
        logp = logits.gather(2, target)[..., 0] - torch.logsumexp(logits, 2)
        p = logp.double().exp().numpy()
        bits += -np.log2((n_seen * p + 1.0) / (n_seen + n_classes)).sum(-1)
    return bits


def online_codelength(X: np.ndarray | Vectors, y: np.ndarray, n_classes: int,
                      portions: Portions, fit: Callable[..., ProbeFit]) -> np.ndarray:
    """Online code length of every block, in bits: [c, P].

    X: [c, n_train, d] train vectors (an array or Vectors, read chunk by chunk) and y:
    [n_train] labels, both in train order; fit(X, y, n_classes, init) -> ProbeFit: the
    solver, which must accept labels that lack some classes
    (``solvers.fit_seen_classes``); init is the probe of the portion before (None for the
    first), a starting point it may use. Block 0 is the first portion in the uniform code;
    block i the tokens of portion i coded by the probe fitted on portions 0..i-1. The sum
    over blocks is the online code length. A portion's tokens are taken in train order
    (the code length of a block does not depend on the order within it), so each read of
    them stays sequential.
    """
    X, y = as_vectors(X), np.asarray(y)
    bits = np.zeros((X.cells, len(portions.ends)))
    bits[:, 0] = uniform_codelength(int(portions.ends[0]), n_classes)
    probe = None
    for i in range(1, len(portions.ends)):
        seen, end = int(portions.ends[i - 1]), int(portions.ends[i])
        if end > seen:
            known = np.sort(portions.order[:seen])
            probe = fit(X.subset(known), y[known], n_classes, probe)
            block = np.sort(portions.order[seen:end])
            bits[:, i] = block_bits(probe, X.subset(block), y[block], seen)
    return bits
