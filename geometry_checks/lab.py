"""A session's models and measurements: each model loaded once, each (model, sentence set)
captured in one forward pass and measured once. Shared by the pytest plugin and the CLI.

Everything the Lab hands out is shared: treat models, states and measurements as read-only.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

from . import cache as K
from . import capture as C
from . import loader
from . import fetch
from .errors import InputError
from .loader import ModelNotAvailable  # re-exported: geometry_checks.ModelNotAvailable
from .result import Measurement
from .paths import DEFAULT_SENTENCES
from .registry import MODELS
from .sentences import SentenceSet, load_sentence_set
from .streaming import DEFAULT_MAX_PCA_TOKENS, PCA_SEED, measure_states, measure_streaming


@contextlib.contextmanager
def progress_step(what: str, enabled: bool = True):
    """One step of a long run (loading a model, capturing, measuring, drawing) as a tqdm
    line on stderr (`mpnet: loading [00:03]`), cleared when the step ends. Shown only when
    stderr is a terminal: a log or CI output gets no bar and no control characters (the
    commands say what they wrote when they end). Inner bars (capture's per-text bar,
    capture._progress) stack under it."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    import threading

    from tqdm import tqdm

    bar = tqdm(total=None, desc=what, bar_format="{desc} [{elapsed}]", leave=False, file=sys.stderr)
    done = threading.Event()

    def tick() -> None:  # the step has no iterations to count: its elapsed time, once a second
        while not done.wait(1.0):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        bar.close()


def identity_of(ref: loader.ModelRef) -> str | None:
    """The registered model whose weights a model directory holds, by the sha256 of its
    weights file (registry `weights_sha256`; fetch.weights_sha256, cached per file): the
    name its verdicts take (issue 24: the same weights get the same expected failures,
    named `mpnet` or given as `--model=DIR`). None for a model that is no registered model's
    weights (or not a local directory). Callers take a registered name as its own identity
    first (a registered name with other weights stays itself and is warned about)."""
    if not ref.is_dir or ref.spec.init_seed is not None:  # an untrained control is no trained model
        return None
    sha = fetch.weights_sha256(Path(ref.location))
    return next((name for name, spec in MODELS.items() if sha and spec.weights_sha256 == sha), None)


def identity_for(model: str, model_paths: dict[str, str] | None = None) -> str:
    """The name a model's verdicts (expected failures) are looked up under: `identity_of`
    its resolved directory, else the model as given. Resolving reads config.json and
    hashes the weights file once (no model is loaded); a bad model keeps its own name, and
    its error comes when it is measured."""
    if model in MODELS:
        return model
    try:
        return identity_of(loader.resolve(model, model_paths)) or model
    except InputError:
        return model


class Lab:
    def __init__(
        self,
        model_paths: dict[str, str] | None = None,
        device: str = "auto",
        dtype: str = "float32",
        sentences: str | Path = DEFAULT_SENTENCES,
        batch_size: int = 64,
        sublayers: bool = False,
        allow_download: bool = False,
        cache: bool = True,
        truncate: bool = True,
        progress: bool = False,
    ):
        self.model_paths = dict(model_paths or {})
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.sublayers = sublayers
        self.allow_download = allow_download
        # on-disk Measurement cache (geometry_checks.cache; $GEOMETRY_CHECKS_CACHE, --no-cache)
        self.cache = cache
        # issue 14: texts over the model's token limit are cut (one warning line) or, with
        # truncate=False (--no-truncate), rejected
        self.truncate = truncate
        # issue 24: a tqdm line per model and step (loading, capture, measuring) on a terminal
        self.progress = progress
        self._fitted: dict[tuple[str, str], tuple[SentenceSet, dict | None]] = {}
        self.cache_hits: dict[tuple[str, str], str] = {}  # (model, set sha256) -> entry it was served from
        self._failures: dict[str, InputError] = {}
        self.default_sentences = load_sentence_set(sentences)
        self._models: dict[str, C.LoadedModel] = {}
        self._states: dict[tuple[str, str], C.LayerStates] = {}
        self._measurements: dict[tuple[str, str], Measurement] = {}
        self._refs: dict[str, loader.ModelRef] = {}
        self._identities: dict[str, str] = {}

    def ref(self, model: str) -> loader.ModelRef:
        if model not in self._refs:
            self._refs[model] = loader.resolve(model, self.model_paths)
        return self._refs[model]

    def identity(self, model: str) -> str:
        """The name `model`'s verdicts take (identity_for): a directory holding a registered
        model's weights is that model for its expected failures."""
        if model not in self._identities:
            self._identities[model] = model if model in MODELS else (identity_of(self.ref(model)) or model)
        return self._identities[model]

    def _mark_identity(self, model: str, result: Measurement) -> Measurement:
        """Provenance says when a directory was taken for a registered model (same weights)."""
        same = self.identity(model)
        if same != model:
            result.provenance["same_weights_as"] = same
        return result

    def model(self, model: str) -> C.LoadedModel:
        """The loaded model; a failure is remembered, so a missing model costs one attempt."""
        if model in self._failures:
            raise self._failures[model]
        if model not in self._models:
            try:
                with progress_step(f"{model}: loading", self.progress):
                    self._models[model] = self._load(model)
            except InputError as exc:
                self._failures[model] = exc
                raise
        return self._models[model]

    def _load(self, model: str) -> C.LoadedModel:
        ref = self.ref(model)
        if not ref.is_dir:
            # In neither a given directory nor the HF cache. Offline-first: the hub is
            # asked only with allow_download (--allow-download, --latest-revision).
            if not self.allow_download:
                raise ModelNotAvailable(loader.how_to_supply(ref.spec))
            try:
                return loader.load(ref, self.device, self.dtype)
            except InputError as exc:
                raise ModelNotAvailable(str(exc)) from None
        return loader.load(ref, self.device, self.dtype)

    def fitted(self, model: str, sentences: SentenceSet | None = None) -> SentenceSet:
        """`sentences` as the model measures them: every text within its token limit
        (loader.fit_to_limit); one warning line when texts were cut."""
        sentences = sentences or self.default_sentences
        key = (model, sentences.sha256)
        if key not in self._fitted:
            fitted, info = loader.fit_to_limit(self.model(model), sentences, self.truncate)
            if info:
                _warn_truncated(sentences, info)
            self._fitted[key] = (fitted, info)
        return self._fitted[key][0]

    def states(self, model: str, sentences: SentenceSet | None = None) -> C.LayerStates:
        """The captured states of the set as the model measures it (`fitted`: the texts of
        the states are the cut ones where a text was over the token limit)."""
        sentences = sentences or self.default_sentences
        key = (model, sentences.sha256)
        if key not in self._states:
            loaded, fitted = self.model(model), self.fitted(model, sentences)
            with progress_step(f"{model}: capture", self.progress):
                self._states[key] = C.capture(loaded, fitted, self.batch_size, sublayers=self.sublayers)
        return self._states[key]

    def has_measurement(self, model: str, sentences: SentenceSet | None = None) -> bool:
        """Whether this Lab already holds the measurement (asking for it costs nothing)."""
        return (model, (sentences or self.default_sentences).sha256) in self._measurements

    def measurement(self, model: str, sentences: SentenceSet | None = None) -> Measurement:
        sentences = sentences or self.default_sentences
        key = (model, sentences.sha256)
        if key not in self._measurements:
            pooling = self.ref(model).spec.pooling  # the model's own, beside mean (METRICS.md default)
            poolings = ("mean",) if pooling == "mean" else ("mean", pooling)
            self._measurements[key] = self.measure(model, sentences, poolings)
        return self._measurements[key]

    # --- performance and scale (issue 4): the cache and the streaming path --------------------
    def measure(self, model: str, sentences: SentenceSet, poolings: tuple[str, ...] = ("mean",)) -> Measurement:
        """One Measurement: from the on-disk cache, else computed and cached.

        Computed by the streaming engine (issue 13: one production path, sublayers
        included): `streaming.measure_streaming` (bounded memory, one batch at a time), or
        `streaming.measure_states` on the states when this Lab already holds them (no second
        forward pass). `measure.measure` stays the reference definition they are tested
        against (tests/test_streaming.py: equal to 1e-5).
        """
        fields = self._cache_fields(model, sentences, poolings)
        hit = K.load(fields)
        if hit is not None:
            cut = hit.provenance.get("truncated")
            if cut:  # the computation warned (or, with --no-truncate, would have refused)
                if not self.truncate:
                    raise InputError(f"{sentences.source or sentences.name}: {loader.truncation_summary(cut)}; "
                                     "--no-truncate rejects them (shorten them, or drop --no-truncate to truncate)")
                _warn_truncated(sentences, cut)
            self.cache_hits[(model, sentences.sha256)] = str(K.entry_path(fields))
            hit.provenance["location"] = self.ref(model).location
            spec, sha = self.ref(model).spec, hit.provenance.get("weights_sha256")
            if spec.weights_sha256 and sha and sha != spec.weights_sha256:  # as loader.load warns
                warnings.warn(f"{spec.name}: weights sha256 {sha[:12]}… differs from the registry's "
                              f"{spec.weights_sha256[:12]}… ({spec.hub_id}@{spec.revision}): measuring another "
                              "checkpoint", stacklevel=2)
            for item in hit.excluded:  # the warnings the computation gave
                warnings.warn(f"{item['sentence']!r}: {item['reason']}", stacklevel=2)
            return self._mark_identity(model, hit)
        loaded = self.model(model)
        fitted = self.fitted(model, sentences)
        with warnings.catch_warnings(record=True) as caught, progress_step(f"{model}: measuring", self.progress):
            warnings.simplefilter("always")
            if (model, sentences.sha256) in self._states:  # the held states are a capture of `fitted`
                result = measure_states(self._states[(model, sentences.sha256)], fitted, poolings,
                                        self.batch_size, DEFAULT_MAX_PCA_TOKENS, PCA_SEED, sublayers=self.sublayers)
            else:
                result = measure_streaming(loaded, fitted, poolings, self.batch_size,
                                           DEFAULT_MAX_PCA_TOKENS, PCA_SEED, sublayers=self.sublayers)
        for w in caught:
            warnings.warn(str(w.message), stacklevel=2)
        # provenance: the set as given (its hash), and what was cut to the token limit
        result.provenance["sentence_set_sha256"] = sentences.sha256
        info = self._fitted[(model, sentences.sha256)][1]
        if info:
            result.provenance["truncated"] = info
        K.store(fields, result)
        return self._mark_identity(model, result)

    def _cache_fields(self, model: str, sentences: SentenceSet, poolings) -> dict | None:
        if not self.cache or K.cache_dir() is None:
            return None
        return K.key_fields(self.ref(model), device=self.device, dtype=self.dtype, sentences=sentences,
                            batch_size=self.batch_size, poolings=poolings, max_pca_tokens=DEFAULT_MAX_PCA_TOKENS,
                            seed=PCA_SEED, sublayers=self.sublayers)
    # --- end performance and scale ---------------------------------------------------------------

    def release(self, model: str) -> None:
        """Drop a model (its measurements stay): lets a run over big models keep one in memory."""
        self._models.pop(model, None)
        for key in [k for k in self._states if k[0] == model]:
            del self._states[key]


def _warn_truncated(sentences: SentenceSet, info: dict) -> None:
    warnings.warn(f"{sentences.source or sentences.name}: {loader.truncation_summary(info)}: each cut after its last "
                  "whole word that fits (--no-truncate rejects them instead)", stacklevel=3)
