"""A session's models and measurements: each model loaded once, each (model, sentence set)
captured in one forward pass and measured once. Shared by the pytest plugin and the CLI.

Everything the Lab hands out is shared: treat models, states and measurements as read-only.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from . import capture as C
from .errors import InputError
from .measure import Measurement, measure
from .sentences import SentenceSet, load_sentence_set

DEFAULT_SENTENCES = Path(__file__).resolve().parent.parent / "fixtures" / "core.json"


class ModelNotAvailable(InputError):
    """A registered model whose weights are in neither the HF cache nor a given directory."""


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
    ):
        self.model_paths = dict(model_paths or {})
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.sublayers = sublayers
        self.allow_download = allow_download
        self._failures: dict[str, InputError] = {}
        self.default_sentences = load_sentence_set(sentences)
        self._models: dict[str, C.LoadedModel] = {}
        self._states: dict[tuple[str, str], C.LayerStates] = {}
        self._measurements: dict[tuple[str, str], Measurement] = {}
        self._refs: dict[str, C.ModelRef] = {}

    def ref(self, model: str) -> C.ModelRef:
        if model not in self._refs:
            self._refs[model] = C.resolve(model, self.model_paths)
        return self._refs[model]

    def model(self, model: str) -> C.LoadedModel:
        """The loaded model; a failure is remembered, so a missing model costs one attempt."""
        if model in self._failures:
            raise self._failures[model]
        if model not in self._models:
            try:
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
                raise ModelNotAvailable(C.how_to_supply(ref.spec))
            try:
                return C.load(ref, self.device, self.dtype)
            except InputError as exc:
                raise ModelNotAvailable(str(exc)) from None
        return C.load(ref, self.device, self.dtype)

    def states(self, model: str, sentences: SentenceSet | None = None) -> C.LayerStates:
        sentences = sentences or self.default_sentences
        key = (model, sentences.sha256)
        if key not in self._states:
            self._states[key] = C.capture(self.model(model), sentences, self.batch_size, sublayers=self.sublayers)
        return self._states[key]

    def measurement(self, model: str, sentences: SentenceSet | None = None) -> Measurement:
        sentences = sentences or self.default_sentences
        key = (model, sentences.sha256)
        if key not in self._measurements:
            loaded = self.model(model)
            poolings = ("mean", "cls") if loaded.spec.pooling == "cls" else ("mean",)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = measure(self.states(model, sentences), sentences, poolings, sublayers=self.sublayers)
            for w in caught:
                warnings.warn(str(w.message), stacklevel=2)
            self._measurements[key] = result
        return self._measurements[key]

    def release(self, model: str) -> None:
        """Drop a model (its measurements stay): lets a run over big models keep one in memory."""
        self._models.pop(model, None)
        for key in [k for k in self._states if k[0] == model]:
            del self._states[key]
