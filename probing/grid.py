"""Probes fitted from an activation store: the whole grid, or the probe of one head.

A probe predicts a token's tag from one cell's vectors (a site, a layer and a head). For
each site and layer (a block) the vectors of all heads are read from the store once and
then handed to the solvers in row chunks (probing.stream), the probes of all heads are
fitted together (the ``fast`` solver batches them; ``sklearn`` fits them one by one), and
the predictions are scored per test story so that bootstrap intervals resample stories,
not tokens. Blocks are fitted one after another, in local processes or as Ray tasks
(probing.parallel). :func:`fit_probe` runs the same steps for a single head.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from extract.store import Store, open_store
from headprobe.cluster import import_ray, parse_cluster
from headprobe.errors import UsageError, opt
from headprobe.rundir import model_of_store
from probing.controls import (
    CONTROL_METRICS,
    DEFAULT_AMBIGUOUS_MIN_COUNT,
    DEFAULT_CONTROLS,
    SELECTIVITY_CONTROLS,
    WORD_TYPES,
    Control,
    Inputs,
    Prepared,
    Target,
    ambiguous_tokens,
    check_control_store,
    intervals_on,
    parse_controls,
    selectivity,
    strongest_f1,
    word_types,
)
from probing.labels import (
    DEFAULT_EXCLUDE,
    Labels,
    fold_tags,
    sample_test_stories,
    sample_train_stories,
)
from probing.mdl import Portions, online_codelength, plan_portions, uniform_codelength
from probing.metrics import StoryScorer
from probing.multilabel import TagSets, check_store, tag_sets
from probing.one_vs_rest import OneVsRest
from probing.parallel import block_name, map_blocks
from probing.solvers import SOLVERS, ProbeFit
from probing.stream import DEFAULT_CHUNK_ROWS, Vectors, predict, spool_block

VECTOR_SITES = ("key", "query", "key_rot", "query_rot")
DEFAULT_SITES = ("key", "query")
# the probe's scores also computed on the ambiguous test tokens, as "<score>_ambiguous"
AMBIGUOUS_METRICS = ("precision", "recall", "f1", "support", "macro_f1", "accuracy")


@dataclass
class GridConfig:
    """What to probe and how (the options of ``probing fit``).

    sites: vector sites to probe; tagset: 'fine' or 'coarse'; tags, merge_verbs,
    min_support, exclude: how tags fold into classes (see probing.labels); solver: 'fast'
    or 'sklearn'; controls: names among probing.controls.CONTROLS (exactly those; the
    command line adds its names to the defaults), parsed into Control objects when the
    grid starts; layers: model layers (None: all); C: inverse L2 strength; n_boot:
    bootstrap resamples of test stories; seed: seeds the shuffled labels, the control
    task, the story order of MDL, the bootstrap, the
    solver's subsample and the train stories ``max_train_tokens`` keeps; jobs: local
    processes, each fitting one (site, layer) block at a time; ray: a Ray cluster ('auto',
    an address or 'local:N') whose tasks fit the blocks instead; mdl: also compute the
    online code length (probing.mdl); word_types: what a word type of the control task is
    ('token': the model token id, 'lower': its lowercased text, decoded with
    ``tokenizer``, by default the tokenizer of the store's model); multilabel: one-vs-rest
    probes per tag on the tags each token covers (probing.multilabel); chunk_rows: rows
    of a block held in memory at a time (probing.stream); max_train_tokens: train on whole
    train stories, drawn in a seeded order, up to this many tokens (None: all);
    max_test_tokens: score on whole test stories, ranked by a seeded hash of their id, up
    to this many tokens (None: all; probing.labels.sample_test_stories);
    ambiguous_min_count: a test token is ambiguous when its token id carries two or more
    tags in training, each on at least this many training tokens (probing.controls).
    """

    sites: tuple[str, ...] = DEFAULT_SITES
    tagset: str = "fine"
    tags: list[str] | None = None
    merge_verbs: bool = False
    min_support: int = 1
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    solver: str = "fast"
    controls: tuple[str | Control, ...] = DEFAULT_CONTROLS
    layers: list[int] | None = None
    C: float = 1.0
    n_boot: int = 1000
    seed: int = 0
    jobs: int = 1
    mdl: bool = False
    word_types: str = "token"
    tokenizer: str | None = None
    multilabel: bool = False
    ray: str | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    max_train_tokens: int | None = None
    max_test_tokens: int | None = None
    ambiguous_min_count: int = DEFAULT_AMBIGUOUS_MIN_COUNT


@dataclass
class GridResult:
    """Arrays of a finished grid (names and shapes as in probing.results).

    site_heads: [S] heads probed per site (key/value heads for keys); head_axes: [S] 'head'
    or 'kv_head'. Cells past a site's heads are padding (see probing.results).
    """

    sites: list[str]
    layers: list[int]
    tags: list[str]
    arrays: dict[str, np.ndarray]
    labels: Labels | TagSets
    info: dict[str, Any] = field(default_factory=dict)
    site_heads: list[int] = field(default_factory=list)
    head_axes: list[str] = field(default_factory=list)


@dataclass
class HeadProbe:
    """The probe of one head, fitted on the train split and scored on the test split.

    site, layer, head: the cell; tags: [K] class names (multilabel: probed tags); coef:
    [K, d_head] and intercept: [K] act on raw stored vectors (``logits = x @ coef.T +
    intercept``; multilabel: one binary logit per tag); metrics: scores
    named as the arrays of probing.results, per tag ([K]: ``precision``, ``recall``,
    ``f1``, ``support``, ``f1_shuffled``, ``f1_lo``, ...), per probe (floats:
    ``macro_f1``, ``accuracy``, ``macro_f1_shuffled``, ``codelength``, ...) or per MDL
    block ([P]: ``codelength_blocks``); labels: the tokens and classes.
    """

    site: str
    layer: int
    head: int
    tags: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    metrics: dict[str, Any]
    labels: Labels | TagSets

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits [n, K] of raw stored vectors X [n, d_head]."""
        return np.asarray(X, dtype=np.float64) @ self.coef.T + self.intercept

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class ids [n] (indices into ``tags``) of vectors X [n, d_head];
        multilabel: bool [n, K], the token covers each tag."""
        return self.labels.decide(self.decision_function(X))


def _check_mdl_stories(split: np.ndarray, store: Store, config: GridConfig) -> None:
    """Refuse MDL over fewer than 2 train stories: its portions are whole stories, so one
    story is sent in one portion and every code length equals the uniform one."""
    stories = store.tokens(["parent_id"])["parent_id"][split == 0]
    n = len(np.unique(stories))
    if n < 2:
        cause = (f" ({opt('max_train_tokens')} {config.max_train_tokens} keeps {n})"
                 if config.max_train_tokens is not None else f" (the store has {n})")
        raise UsageError(f"{opt('mdl', True)} needs at least 2 train stories{cause}: its "
                         "portions are whole stories")


def _labels(store: Store, config: GridConfig) -> tuple[Labels | TagSets, dict[str, Any]]:
    """The probe targets and what the train sample took ({} without max_train_tokens)."""
    if config.tagset not in ("fine", "coarse"):
        raise UsageError(f"unknown tag set {config.tagset!r}; choose fine or coarse")
    table = store.tokens([f"{config.tagset}_tag", "split"])
    split, info = _sampled(store, table["split"], config)
    if config.mdl:
        _check_mdl_stories(split, store, config)
    if config.multilabel:
        check_store(store)
        return tag_sets(store.tokens([f"{config.tagset}_tags"])[f"{config.tagset}_tags"],
                        table[f"{config.tagset}_tag"], split,
                        store.tags[config.tagset], merge_verbs=config.merge_verbs,
                        keep=config.tags, min_support=config.min_support,
                        exclude=config.exclude), info
    return fold_tags(table[f"{config.tagset}_tag"], split, store.tags[config.tagset],
                     merge_verbs=config.merge_verbs, keep=config.tags,
                     min_support=config.min_support, exclude=config.exclude), info


def _sampled(store: Store, split: np.ndarray, config: GridConfig
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """The split [n_tokens] with the stories left out by ``max_train_tokens`` and
    ``max_test_tokens`` set to -1, and what each sample took."""
    info: dict[str, Any] = {}
    samples = (("train", sample_train_stories, config.max_train_tokens),
               ("test", sample_test_stories, config.max_test_tokens))
    if all(limit is None for _, _, limit in samples):
        return split, info
    stories = store.tokens(["parent_id"])["parent_id"]
    for name, sample, limit in samples:
        if limit is not None:
            split, kept = sample(split, stories, limit, config.seed)
            info.update({f"max_{name}_tokens": limit, f"{name}_stories": kept})
    return split, info


def _with_controls(config: GridConfig, have_control_store: bool) -> GridConfig:
    """``config`` with its controls checked; 'random' is on exactly with a control store."""
    return replace(config, controls=parse_controls(list(config.controls), have_control_store))


def _check_config(store: Store, config: GridConfig) -> list[int]:
    """Refuse settings the store cannot serve; return the layers to probe."""
    if config.solver not in SOLVERS:
        raise UsageError(f"unknown solver {config.solver!r}; choose from {', '.join(SOLVERS)}")
    bad = [s for s in config.sites if s not in VECTOR_SITES or s not in store.sites]
    if bad or not config.sites:
        raise UsageError(f"site(s) {', '.join(bad) or '(none)'} cannot be probed; the store "
                         f"has {', '.join(s for s in store.sites if s in VECTOR_SITES)}")
    layers = list(range(store.n_layers)) if config.layers is None else list(config.layers)
    if not layers or any(not 0 <= layer < store.n_layers for layer in layers):
        raise UsageError(f"layers must lie in 0..{store.n_layers - 1}")
    if config.min_support < 0:
        raise UsageError(f"{opt('min_support')} must be >= 0")
    if config.C <= 0:
        raise UsageError(f"{opt('C')} must be positive")
    if config.ambiguous_min_count < 1:
        raise UsageError(f"{opt('ambiguous_min_count')} must be at least 1")
    if config.n_boot < 1:
        raise UsageError(f"{opt('n_boot')} (bootstrap resamples) must be at least 1")
    if config.seed < 0:
        raise UsageError(f"{opt('seed')} must be at least 0, got {config.seed}")
    _check_scale(config)
    if config.word_types not in WORD_TYPES:
        raise UsageError(f"unknown {opt('word_types')} {config.word_types!r}; choose from "
                         f"{', '.join(WORD_TYPES)}")
    if config.mdl and config.multilabel:
        raise UsageError(f"{opt('mdl')} codes one tag per token; it does not combine with "
                         f"{opt('multilabel')}")
    _check_word_types(config)
    return layers


def _check_word_types(config: GridConfig) -> None:
    """Refuse word-type settings that no control of ``config`` would use."""
    if config.word_types != "token" and not any(c.word_type == "config"
                                                for c in config.controls):
        raise UsageError(f"{opt('word_types')} sets the word types of the control task, "
                         f"which does not run; add control-task to {opt('controls')} or "
                         f"leave {opt('word_types')} out")
    if config.tokenizer and "lower" not in {c.kind(config.word_types)
                                            for c in config.controls}:
        raise UsageError(f"{opt('tokenizer')} decodes lowercased word types, which no "
                         f"control here uses; give it with {opt('word_types', 'lower')} "
                         "and control-task, or with the lexical-lower control, or leave "
                         "it out")


def _check_scale(config: GridConfig) -> None:
    """Refuse bad settings of how the grid is read and spread (before any work)."""
    if config.jobs < 1:
        raise UsageError(f"{opt('jobs')} must be positive")
    if config.chunk_rows < 1:
        raise UsageError(f"{opt('chunk_rows')} must be positive")
    if config.max_train_tokens is not None and config.max_train_tokens < 1:
        raise UsageError(f"{opt('max_train_tokens')} must be a positive number of tokens")
    if config.max_test_tokens is not None and config.max_test_tokens < 1:
        raise UsageError(f"{opt('max_test_tokens')} must be a positive number of tokens")
    if config.ray is not None:
        if config.jobs > 1:
            raise UsageError(f"give {opt('jobs')} (local processes) or {opt('ray')} (a "
                             "cluster), not both")
        parse_cluster(config.ray)
        import_ray()


class _Reader:
    """Spools the vectors of the probed tokens of one block (probing.stream) and hands
    out the train and test tokens' Vectors, in the order of the labels."""

    def __init__(self, labels: Labels | TagSets, chunk_rows: int, scratch: str):
        self.rows = np.sort(np.concatenate([labels.train_rows, labels.test_rows]))
        self.train = np.searchsorted(self.rows, labels.train_rows)
        self.test = np.searchsorted(self.rows, labels.test_rows)
        self.chunk_rows, self.scratch = chunk_rows, scratch

    def __call__(self, source: Store, site: str, layer: int,
                 head: int | None = None) -> tuple[Vectors, Vectors]:
        """(train [c, n_train, d_head], test [c, n_test, d_head]); c is 1 for one head."""
        block = spool_block(source, site, layer, self.rows, self.scratch, self.chunk_rows,
                            head)
        return block.subset(self.train), block.subset(self.test)


def _fit(X: Vectors, y: np.ndarray, target: Target, config: GridConfig,
         seen_only: bool = False, init: ProbeFit | None = None) -> ProbeFit | OneVsRest:
    """Probes of X [c, n, d] on targets y (``target.fit``: multinomial or one-vs-rest);
    ``seen_only``: y may lack some classes (some tags may be constant); init: a fit to
    start from (see probing.solvers)."""
    return target.fit(X, y, solver=config.solver, C=config.C, seed=config.seed,
                      seen_only=seen_only, init=init)


@dataclass
class _Tasks:
    """What every cell is scored on, prepared once per grid.

    labels: the tag classes (or tag sets); scorer: scores test predictions; prepared:
    control name -> what it is fitted on or predicts (probing.controls.Prepared);
    ambiguous: bool [n_test], the ambiguous test tokens; portions: the MDL cuts of the
    train tokens when ``mdl`` is on.
    """

    labels: Labels | TagSets
    scorer: StoryScorer
    prepared: dict[str, Prepared] = field(default_factory=dict)
    ambiguous: np.ndarray | None = None
    portions: Portions | None = None

    @property
    def control_y(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Control-task targets (train, test) when that control runs."""
        got = self.prepared.get("control-task")
        return None if got is None else (got.train_y, got.test_y)


def _tokenizer(store: Store, config: GridConfig) -> Any:
    """The tokenizer that decodes token ids for lowercased word types."""
    from headprobe.tokenization import load_tokenizer

    name = config.tokenizer or model_of_store(store.attrs)
    if name is None:
        raise UsageError(f"the store names no model; give {opt('tokenizer')} for "
                         "lowercased word types")
    tokenizer = load_tokenizer(name)
    store.check_vocabulary(tokenizer, f"tokenizer {name}")
    return tokenizer


def _word_types(store: Store, labels: Target, config: GridConfig
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Word types (train [n_train], test [n_test]) of every kind the controls need;
    token ids always (the ambiguous tokens are defined on them)."""
    rows = np.concatenate([labels.train_rows, labels.test_rows])
    ids = store.tokens(["input_id"], index=rows)["input_id"]
    kinds = {"token"} | {c.kind(config.word_types) for c in config.controls} - {None}
    n_train = len(labels.train_rows)
    out = {}
    for kind in sorted(kinds):
        types = word_types(ids, kind, _tokenizer(store, config) if kind == "lower" else None)
        out[kind] = (types[:n_train], types[n_train:])
    return out


def _tasks(store: Store, labels: Labels | TagSets, config: GridConfig) -> _Tasks:
    """The scorer, what each control needs, the ambiguous tokens and the MDL portions."""
    # windows of one story (datasets_build max_tokens) stay together when resampled
    stories = store.tokens(["parent_id"], index=labels.test_rows)["parent_id"]
    tasks = _Tasks(labels, labels.scorer(stories, config.n_boot, config.seed))
    types = _word_types(store, labels, config)
    inputs = Inputs(labels, types, config.word_types, config.seed)
    tasks.prepared = {c.name: c.prepare(inputs) for c in config.controls
                      if c.prepare is not None}
    tasks.ambiguous = ambiguous_tokens(types["token"][0], labels.codes(labels.train_y),
                                       types["token"][1], config.ambiguous_min_count)
    if config.mdl:
        train_stories = store.tokens(["parent_id"], index=labels.train_rows)["parent_id"]
        tasks.portions = plan_portions(train_stories, config.seed)
    return tasks


def _predictions(control: Control, got: Prepared, data: tuple[Vectors, Vectors],
                 tasks: _Tasks, config: GridConfig,
                 control_data: tuple[Vectors, Vectors] | None) -> np.ndarray:
    """A control's test predictions [c, n_test(, K)] (fixed ones: [1, n_test(, K)])."""
    labels = tasks.labels
    if control.fitted == "none":
        return got.test_pred[None]
    train, test = control_data if control.fitted == "vectors" else data
    train_y = labels.train_y if got.train_y is None else got.train_y
    return predict(_fit(train, train_y, labels, config,
                        seen_only=got.train_y is not None), test)


def _scored(scorer: StoryScorer, ambiguous: np.ndarray, pred: np.ndarray,
            y: np.ndarray | None, interval: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Scores of predictions pred [c, n_test, ...] on all test tokens ('') and on the
    ambiguous ones ('_ambiguous'); y: what they are scored against (None: the tags)."""
    return {"": scorer(pred, interval, y=y),
            "_ambiguous": scorer.subset(ambiguous)(pred[:, ambiguous],
                                                   y=None if y is None else y[ambiguous])}


def _control_scores(data: tuple[Vectors, Vectors], tasks: _Tasks, config: GridConfig,
                    control_data: tuple[Vectors, Vectors] | None,
                    probe_pred: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of every control ``config`` runs ([c, ...]), and the probe's F1 minus
    the lexical baseline's on the ambiguous tokens (with its interval when on)."""
    cells, out = len(probe_pred), {}
    for control in config.controls:
        if control.fitted == "interval":
            continue
        got = tasks.prepared[control.name]
        pred = _predictions(control, got, data, tasks, config, control_data)
        for amb, scores in _scored(tasks.scorer, tasks.ambiguous, pred, got.test_y).items():
            for metric in CONTROL_METRICS:
                value = scores[metric]
                out[f"{metric}_{control.suffix}{amb}"] = np.repeat(
                    value, cells // len(value), axis=0)
        if control.gain:
            amb = tasks.ambiguous
            out.update(tasks.scorer.subset(amb).gain(
                probe_pred[:, amb], got.test_pred[amb], intervals_on(config.controls)))
    return out


def _mdl_scores(train: Vectors, tasks: _Tasks, config: GridConfig,
                control_train: Vectors | None) -> dict[str, np.ndarray]:
    """Online code length per block [c, P], its sum [c] and compression [c] of the tags,
    and of the random-weights vectors and the control task when those controls run."""
    labels, K = tasks.labels, tasks.labels.n_classes
    runs = {"": (train, labels.train_y)}
    if control_train is not None:
        runs["_random"] = (control_train, labels.train_y)
    if tasks.control_y is not None:
        runs["_control_task"] = (train, tasks.control_y[0])
    uniform = uniform_codelength(len(labels.train_y), K)
    out = {}
    for suffix, (X, y) in runs.items():
        blocks = online_codelength(X, y, K, tasks.portions, lambda X, y, k, init: _fit(
            X, y, labels, config, seen_only=True, init=init))
        out[f"codelength_blocks{suffix}"] = blocks
        out[f"codelength{suffix}"] = blocks.sum(-1)
        out[f"compression{suffix}"] = uniform / blocks.sum(-1)
    return out


def _score_cells(data: tuple[Vectors, Vectors], tasks: _Tasks, config: GridConfig,
                 control_data: tuple[Vectors, Vectors] | None = None
                 ) -> dict[str, np.ndarray]:
    """Fit the probes of c cells and score them and the controls ``config`` asks for, on
    all test tokens and on the ambiguous ones.

    data: (train [c, n_train, d_head], test [c, n_test, d_head]); control_data: the same
    tokens' vectors in the control store (the random-weights control). Returns array name
    (as in probing.results) -> [c, ...].
    """
    train, test = data
    fit = _fit(train, tasks.labels.train_y, tasks.labels, config)
    out = {"coef": fit.coef.astype(np.float32), "intercept": fit.intercept.astype(np.float32),
           "n_iter": fit.n_iter.astype(np.int32)}
    pred = predict(fit, test)
    scores = _scored(tasks.scorer, tasks.ambiguous, pred, None, intervals_on(config.controls))
    out.update(scores[""])
    out.update({f"{m}_ambiguous": scores["_ambiguous"][m] for m in AMBIGUOUS_METRICS})
    out.update(_control_scores(data, tasks, config, control_data, pred))
    if tasks.portions is not None:
        out.update(_mdl_scores(train, tasks, config,
                               None if control_data is None else control_data[0]))
    return out


def _selectivity(arrays: dict[str, np.ndarray], controls: tuple[Control, ...]) -> str | None:
    """Add ``selectivity`` (per-tag F1) and ``selectivity_accuracy`` (accuracy; against
    the control task this is Hewitt & Liang's selectivity) against the first control run
    of SELECTIVITY_CONTROLS, and ``selectivity_f1``: per-tag F1 minus the highest F1 of
    any control run (the lexical baseline included)."""
    names = [c.name for c in controls]
    reference = next((c for c in SELECTIVITY_CONTROLS if c in names), None)
    if reference is not None:
        arrays["selectivity"] = selectivity(arrays, reference)
        arrays["selectivity_accuracy"] = selectivity(arrays, reference, "accuracy")
    strongest = strongest_f1(arrays)
    if strongest is not None:
        arrays["selectivity_f1"] = arrays["f1"] - strongest
    return reference


@contextmanager
def _threads() -> Iterator[None]:
    """One thread for torch and BLAS: a block is fitted the same way in every worker, so
    the results do not depend on how blocks are spread (parallelism is over blocks)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _opened(store: Store | str | Path, what: str = "store") -> Iterator[Store]:
    """An open store as given, or the store at a path (closed afterwards); what: 'store' or
    'control_store' (how a missing file is named)."""
    if isinstance(store, Store):
        yield store
    else:
        with open_store(store, what=what) as opened:
            yield opened


def run_grid(store_path: str | Path, config: GridConfig, control_store: str | None = None,
             log: Callable[[str], None] | None = None) -> GridResult:
    """Fit and score the probe of every (site, layer, head) of a store.

    Parameters
    ----------
    store_path : the activation store (``python -m extract``).
    config : what to probe and how.
    control_store : a store of the same tokens extracted from a re-initialised model; turns
        on the random-weights control.
    log : receives one progress line per (site, layer); default: stderr.

    Returns
    -------
    GridResult whose arrays are [S, L, H, K] per tag, [S, L, H] per probe,
    [S, L, H, K, d_head] for ``coef`` (names as in probing.results). H is the largest head
    count of the sites: keys of a grouped-query model have fewer (key/value) heads than
    queries, and their cells past ``site_heads[s]`` are NaN (-1 in integer arrays).
    Each (site, layer) block is read in row chunks (``config.chunk_rows``) and fitted in
    this process, in ``config.jobs`` local processes or as tasks on ``config.ray``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    config = _with_controls(config, control_store is not None)
    with _threads(), open_store(store_path) as store:
        layers = _check_config(store, config)
        labels, sample = _labels(store, config)
        if control_store is not None:
            with open_store(control_store, what="control_store") as control:
                check_control_store(store, control)
        result = _fit_all(store, control_store, labels, layers, config, log)
    result.info.update({"max_train_tokens": config.max_train_tokens,
                        "max_test_tokens": config.max_test_tokens, **sample})
    return result


def padded(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array of padding: NaN for floats, -1 for integers (cells past a site's heads)."""
    return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -1, dtype=dtype)


def head_axis(store: Store, site: str) -> str:
    """'kv_head' for a site stored per key/value head of a grouped-query model, else 'head'."""
    return "kv_head" if store.heads(site) < store.n_heads else "head"


def _mdl_arrays(tasks: _Tasks) -> dict[str, np.ndarray]:
    """The arrays that describe the MDL portions (none without ``mdl``)."""
    p = tasks.portions
    if p is None:
        return {}
    return {"mdl_percent": p.percent, "mdl_tokens": p.ends.astype(np.int64),
            "mdl_stories": p.stories.astype(np.int64),
            "uniform_codelength": np.float64(uniform_codelength(
                len(tasks.labels.train_y), tasks.labels.n_classes))}


def _fit_block(site: str, layer: int, store_path: str, control_path: str | None,
               tasks: _Tasks, config: GridConfig) -> dict[str, np.ndarray]:
    """The arrays of every head of one (site, layer) (see :func:`_score_cells`); runs in
    this process or in a worker, always on one thread."""
    with (_threads(), open_store(store_path) as store,
          tempfile.TemporaryDirectory(prefix="headprobe-block-") as scratch):
        read = _Reader(tasks.labels, config.chunk_rows, scratch)
        control_data = None
        if control_path is not None:
            with open_store(control_path) as control:
                control_data = read(control, site, layer)
        return _score_cells(read(store, site, layer), tasks, config, control_data)


def _fit_all(store: Store, control_store: str | None, labels: Labels | TagSets,
             layers: list[int], config: GridConfig, log: Callable[[str], None]) -> GridResult:
    S, L = len(config.sites), len(layers)
    site_heads = [store.heads(site) for site in config.sites]
    tasks = _tasks(store, labels, config)
    blocks = [(site, layer) for site in config.sites for layer in layers]
    paths = (str(store.path.resolve()),
             None if control_store is None else str(Path(control_store).resolve()))
    log(f"probing {len(blocks)} (site, layer) blocks ({labels.n_classes} tags, "
        f"{len(labels.train_y)} train / {len(labels.test_y)} test tokens)")
    arrays: dict[str, np.ndarray] = {}
    results = map_blocks(_fit_block, blocks, (*paths, tasks, config), config.jobs, config.ray)
    for i, got in enumerate(results):
        s, li = divmod(i, L)
        log(f"probed {block_name(blocks[i])} ({site_heads[s]} heads; {i + 1}/{len(blocks)})")
        for name, value in got.items():
            if name not in arrays:
                arrays[name] = padded((S, L, max(site_heads), *value.shape[1:]), value.dtype)
            arrays[name][s, li, :len(value)] = value
    reference = _selectivity(arrays, config.controls)
    arrays.update(_mdl_arrays(tasks))
    info = {"selectivity_control": reference, "n_train": int(len(labels.train_y)),
            "n_test": int(len(labels.test_y)), "n_test_stories": tasks.scorer.n_groups,
            "n_ambiguous_test": int(tasks.ambiguous.sum()),
            "ambiguous_min_count": config.ambiguous_min_count}
    return GridResult(list(config.sites), layers, labels.names, arrays, labels, info,
                      site_heads, [head_axis(store, site) for site in config.sites])


def fit_probe(store: Store | str | Path, site: str, layer: int, head: int,
              control_store: Store | str | Path | None = None, **options: Any) -> HeadProbe:
    """Fit and score the probe of one head, exactly as the grid does for that cell.

    Parameters
    ----------
    store : an open store (``headprobe.open_store``) or its path.
    site : 'key' or 'query' (or 'key_rot', 'query_rot' where stored).
    layer, head : the head, e.g. 2 and 0 for L2H0; for keys a key/value head.
    control_store : a store of the same tokens from a re-initialised model (turns on the
        random-weights control).
    **options : fields of :class:`GridConfig` (tagset, tags, merge_verbs, min_support,
        exclude, solver, controls, C, n_boot, seed, mdl, word_types, tokenizer,
        multilabel, chunk_rows, max_train_tokens, max_test_tokens).

    Returns
    -------
    HeadProbe with ``coef`` [K, d_head], ``intercept`` [K] and ``metrics``.
    """
    config = replace(GridConfig(**options), sites=(site,), layers=[layer])
    config = _with_controls(config, control_store is not None)
    with (_threads(), _opened(store) as opened,
          tempfile.TemporaryDirectory(prefix="headprobe-probe-") as scratch):
        _check_config(opened, config)
        if not 0 <= head < opened.heads(site):
            raise UsageError(f"head {head} is outside the store's {opened.heads(site)} heads "
                             f"of site {site!r}")
        labels, _ = _labels(opened, config)
        tasks = _tasks(opened, labels, config)
        read = _Reader(labels, config.chunk_rows, scratch)
        control_data = None
        if control_store is not None:
            with _opened(control_store, "control_store") as control:
                check_control_store(opened, control)
                control_data = read(control, site, layer, head)
        got = _score_cells(read(opened, site, layer, head), tasks, config, control_data)
    _selectivity(got, config.controls)
    metrics = {name: value[0] if value.ndim > 1 else value[0].item()
               for name, value in got.items() if name not in ("coef", "intercept")}
    metrics.update({name: value.item() if value.ndim == 0 else value
                    for name, value in _mdl_arrays(tasks).items()})
    return HeadProbe(site, layer, head, labels.names, got["coef"][0], got["intercept"][0],
                     metrics, labels)
