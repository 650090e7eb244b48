"""Capturing a loaded model's hidden states at every depth, batch by batch.

What a capture runs on (`LoadedModel`) comes from `loader.load`; this module only runs
forward passes and collects states. What it produces (`LayerStates`): every depth 0..L of
every text of a sentence set, plus the stages beside the depths (`final`, a pre-norm
model's final norm; `proj`, a projection head; `mid`, each block's post-attention state
with sublayers), either from `output_hidden_states` or from forward hooks on the embedding
module and the blocks (the two agree exactly where both apply: `verify_depths` checks it on
a probe sentence at load; custom-code models that ignore `output_hidden_states`, and models
with a final norm, use hooks). `iter_batches` streams the same states batch by batch for the
streaming engine; `check_batch_invariance` proves a sentence's states do not depend on its
batch.
"""
from __future__ import annotations

import contextlib
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from . import metrics as M
from .errors import InputError
from .registry import ARCHITECTURES, MODELS, ModelSpec
from .sentences import SentenceSet


# --------------------------------------------------------------------------- the model a capture runs on


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    provenance: dict
    # The token projection head (spec.projection_module), resolved at load time; see load_projection.
    projection: torch.nn.Module | None = None
    # The most tokens (special tokens included) one text may have: see token_limit.
    max_tokens: int | None = None
    # fit_to_limit's token ids of the texts within the limit ({model text: ids}, its last
    # call only), which token_ids then takes instead of running the tokenizer again
    recent_ids: dict = field(default_factory=dict, repr=False, compare=False)


PROBE_TEXT = "The quick brown fox jumps over the lazy dog."


def verify_depths(loaded: LoadedModel, model_type: str | None) -> None:
    """On one probe sentence, the forward hooks capture relies on against the model's own
    `output_hidden_states`: depths 0..L-1 must be the same tensors; depth L must be the last
    block's output, or, where the spec names a final norm, that norm's output (transformers
    puts the final norm's output at depth L; the suite keeps the raw residual there and
    measures the norm as the stage `final`). Any other disagreement means the suite does not
    know where this architecture's depths are: a one-line InputError, never a silent
    measurement. Models whose hidden states are unreliable (hooks only) are not probed."""
    spec = loaded.spec
    if not spec.hidden_states_reliable:
        return
    known = model_type in ARCHITECTURES or spec.name in MODELS
    what = (f"{spec.name} (model_type {model_type!r}, "
            + ("a known architecture" if known else "an architecture the suite does not know") + ")")
    fix = "its layout in registry.ARCHITECTURES (embeddings, blocks, final norm) needs to be declared or fixed"
    enc = loaded.tokenizer([PROBE_TEXT], return_tensors="pt", truncation=True, max_length=loaded.max_tokens)
    batch = {k: v.to(loaded.device) for k, v in enc.items()}
    try:
        with torch.inference_mode(), _hooks(loaded.model, spec, False) as rec:
            out = loaded.model(**batch, output_hidden_states=True)
    except InputError:
        raise InputError(f"{what}: its embedding/block modules ({spec.embeddings_module}, {spec.blocks_module}) "
                         f"are not where the suite looks, so its depths cannot be verified; {fix}") from None
    hidden, depth = getattr(out, "hidden_states", None), rec["depth"]
    if hidden is None or len(hidden) != spec.layers + 1:
        raise InputError(f"{spec.name}: the model ignored output_hidden_states; set hidden_states_reliable=False "
                         "in its registry entry to capture with hooks")
    if len(depth) != spec.layers + 1:
        raise InputError(f"{what}: hooks saw {len(depth)} depths, expected {spec.layers + 1}; {fix}")

    def same(a, b) -> bool:  # NaN where NaN (a broken checkpoint is check_finite's to report)
        a, b = a.float(), b.float()
        scale = float(torch.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0).abs().max())
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5 * scale, equal_nan=True)

    for d in range(spec.layers):
        if not same(depth[d], hidden[d]):
            raise InputError(f"{what}: its hidden_states at depth {d} are not the output of "
                             f"{spec.embeddings_module if d == 0 else f'{spec.blocks_module}.{d - 1}'}; {fix}")
    last = rec["final"][0] if spec.final_norm_module else depth[-1]
    if not same(last, hidden[-1]):
        where = f"its final norm {spec.final_norm_module!r}" if spec.final_norm_module else "its last block"
        raise InputError(f"{what}: its hidden_states at the last depth {spec.layers} are not the output of {where} "
                         f"(a final norm the registry does not name?); {fix}")


# --------------------------------------------------------------------------- states


@dataclass
class LayerStates:
    """Every depth of every captured text of one (model, sentence set).

    Shape contract (N texts, P = L + 1 depths, T padded positions, H hidden size):

    - `states`    float32 [P, N, T, H]: depth 0 = embedding output, depth l = block l output.
    - `attn`      bool [N, T]: attention mask (the positions T_s, specials included).
    - `content`   bool [N, T]: content tokens C_s (attention minus special and marker tokens).
    - `input_ids` long [N, T]; `tokens[n]` the token strings of text n (unpadded);
      `word_ids[n]` the word index of each token, split from the text (`text_word_ids`; None
      for specials and whitespace-only tokens); `offsets[n]` char spans in `model_texts[n]`.
    - `sublayers` name -> float32 [P, N, T, H], NaN at depth 0; `attn` = post-attention
      state `mid` of block d (filled only when captured with sublayers=True).
    - `proj`      float32 [N, T, Hp] or None: the projection head's output (ColBERT `proj`).
    - `final`     float32 [N, T, H] or None: the final norm's output (pre-norm models: the
      stage `final` beside `proj`, not a depth); the model's sentence embedding pools it.
    - `summary`   `first` or `last`: the model's summary token, which `cls` pooling and
      cls_mean_alignment read (an encoder's first position, a causal model's last non-pad).
    - `texts[n]`, `roles[n]`: the text as given and its role (`doc` or `query`); the
      model saw `model_texts[n]` (with its marker, for ColBERT).

    States live on the device they were captured on; treat the object as read-only.
    """

    texts: tuple[str, ...]
    roles: tuple[str, ...]
    model_texts: tuple[str, ...]
    states: torch.Tensor
    attn: torch.Tensor
    content: torch.Tensor
    input_ids: torch.Tensor
    tokens: Sequence[list[str]]  # a list, or iter_batches' _RowLists (made per row when read)
    word_ids: Sequence[list[int | None]]
    offsets: Sequence[list[tuple[int, int]]]
    sublayers: dict[str, torch.Tensor] = field(default_factory=dict)
    proj: torch.Tensor | None = None
    provenance: dict = field(default_factory=dict)
    final: torch.Tensor | None = None
    summary: str = "first"

    @property
    def depths(self) -> int:
        return self.states.shape[0]

    def index(self, text: str, role: str = "doc") -> int:
        key = (text, role if role in self.roles else "doc")
        try:
            return self._index[key]
        except AttributeError:
            self._index = {(t, r): i for i, (t, r) in enumerate(zip(self.texts, self.roles))}
            return self._index[key]

    def select(self, rows: list[int]) -> "LayerStates":
        """The same container restricted to `rows`, trimmed to their longest text."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.states.device)
        width = int(self.attn[idx].sum(1).max()) if rows else 0
        return LayerStates(
            texts=tuple(self.texts[r] for r in rows),
            roles=tuple(self.roles[r] for r in rows),
            model_texts=tuple(self.model_texts[r] for r in rows),
            states=self.states[:, idx, :width],
            attn=self.attn[idx, :width],
            content=self.content[idx, :width],
            input_ids=self.input_ids[idx, :width],
            tokens=[self.tokens[r] for r in rows],
            word_ids=[self.word_ids[r] for r in rows],
            offsets=[self.offsets[r] for r in rows],
            sublayers={k: v[:, idx, :width] for k, v in self.sublayers.items()},
            proj=None if self.proj is None else self.proj[idx, :width],
            provenance=self.provenance,
            final=None if self.final is None else self.final[idx, :width],
            summary=self.summary,
        )

    def words(self, n: int) -> list[str]:
        """The words of text n, indexed by word id (`text_word_ids`: split from the text)."""
        text = self.model_texts[n]
        return [text[start:end] for start, end, _ in word_spans(self.word_ids[n], self.offsets[n], text)]


# --------------------------------------------------------------------------- words


def is_punctuation(ch: str) -> bool:
    """A punctuation character as BERT's basic tokenizer counts one (each is a word of its
    own there): Unicode category P*, or an ASCII character that is neither a letter, a digit,
    a space nor a control character (so `$`, `+`, `^` and `` ` `` count too)."""
    if unicodedata.category(ch).startswith("P"):
        return True
    code = ord(ch)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126


def text_word_ids(tokenizer_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]],
                  text: str) -> list[int | None]:
    """The word id of each token of `text`, split from the text itself (issue 23: the
    tokenizer's own word ids put the space before a word into it for byte-level BPE, as
    SmolLM2's ` rose`, and are one id for a whole text with Gemma 3's tokenizer).

    A token starts a new word where the tokenizer's word id changes, where whitespace lies
    between it and the previous word's last character, or where a punctuation character
    (`is_punctuation`) is the last character before it or its own first one: BERT's basic
    tokenizer makes every punctuation character a word, so `e.g.` is `e . g .` here as
    there. A word never splits a token: a token holding letters and punctuation (SmolLM2's
    `'t`, Gemma 3's `"!`) is one word. Tokens without a tokenizer word id (special tokens)
    and tokens that are only whitespace (Gemma 3's `▁▁`) belong to no word (None). Ids
    count up from 0 in token order. For a tokenizer that already splits at whitespace and
    punctuation (BERT's, MPNet's) the ids are its own, unchanged.
    """
    out: list[int | None] = []
    word, prev_id, last = -1, None, 0  # last: just past the previous word token's last non-space character
    for wid, (start, end) in zip(tokenizer_ids, offsets):
        piece = text[start:end]
        core = piece.strip()
        if wid is None or not core:
            out.append(None)
            continue
        first = start + (len(piece) - len(piece.lstrip()))
        # a byte-level token can share its character with the previous one (one character
        # split over two byte tokens): never a boundary
        between = None if word >= 0 and first < last else text[last:first]
        if word < 0 or wid != prev_id or (between is not None and (
                any(ch.isspace() for ch in between) or is_punctuation(text[last - 1]) or is_punctuation(core[0]))):
            word += 1
        out.append(word)
        prev_id, last = wid, max(last, first + len(core))
    return out


def word_spans(word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]],
               text: str) -> list[tuple[int, int, list[int]]]:
    """For each word id 0..W-1 (of `text_word_ids`): (start, end, token positions), the
    span from its first token's first to its last token's last non-whitespace character
    (so a word's text, `text[start:end]`, has no surrounding whitespace); (0, 0, []) for an
    id no token has."""
    spans: dict[int, list] = {}
    for t, (wid, (start, end)) in enumerate(zip(word_ids, offsets)):
        if wid is None:
            continue
        piece = text[start:end]
        lo, hi = start + (len(piece) - len(piece.lstrip())), start + len(piece.rstrip())
        span = spans.get(wid)
        if span is None:
            spans[wid] = [lo, hi, [t]]
        else:
            span[0], span[1] = min(span[0], lo), max(span[1], hi)
            span[2].append(t)
    return [tuple(spans[w]) if w in spans else (0, 0, []) for w in range(max(spans, default=-1) + 1)]


def texts_of(sentences: SentenceSet) -> list[tuple[str, str]]:
    """Every distinct (text, role) a sentence set needs: sentences, pair texts and retrieval
    documents as `doc`, retrieval queries as `query`, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for text in sentences.sentences:
        seen.setdefault((text, "doc"))
    for a, b in sentences.pairs.values():
        seen.setdefault((a, "doc"))
        seen.setdefault((b, "doc"))
    for text in sentences.retrieval_pool:
        seen.setdefault((text, "doc"))
    for item in sentences.retrieval:
        seen.setdefault((item.query, "query"))
    return list(seen)


def _model_text(spec: ModelSpec, text: str, role: str) -> str:
    marker = spec.query_marker if role == "query" else spec.document_marker
    return f"{marker} {text}" if marker else text


def special_ids(loaded: LoadedModel) -> list[int]:
    tok = loaded.tokenizer
    ids = set(tok.all_special_ids)
    for marker in (loaded.spec.query_marker, loaded.spec.document_marker):
        if marker:
            mid = tok.convert_tokens_to_ids(marker)
            if mid is None or mid == tok.unk_token_id:
                raise InputError(f"{loaded.spec.name}: the tokenizer has no marker token {marker}")
            ids.add(mid)
    return sorted(ids)


@contextlib.contextmanager
def _hooks(model: torch.nn.Module, spec: ModelSpec, sublayers: bool):
    """Forward hooks that record depth 0, every block's output, the final norm's output (where
    the spec names one: `final`) and (optionally) `mid`: the output of the block's
    attn_output_module, or its input where spec.attn_output_is_input (pre-norm blocks)."""
    records: dict[str, list[torch.Tensor]] = {"depth": [], "attn": [], "final": []}
    handles = []

    def first(output):
        return output[0] if isinstance(output, (tuple, list)) else output

    try:
        embeddings = model.get_submodule(spec.embeddings_module)
        blocks = model.get_submodule(spec.blocks_module)
    except AttributeError as exc:
        raise InputError(f"{spec.name}: the registry's module path does not exist in this model ({exc})") from None
    handles.append(embeddings.register_forward_hook(lambda m, i, o: records["depth"].append(first(o))))
    for block in blocks:
        handles.append(block.register_forward_hook(lambda m, i, o: records["depth"].append(first(o))))
        if sublayers:
            if spec.attn_output_module is None:
                raise InputError(f"{spec.name}: sublayer capture is not supported for this block layout")
            try:
                mod = block.get_submodule(spec.attn_output_module)
            except AttributeError:
                raise InputError(
                    f"{spec.name}: its blocks have no module {spec.attn_output_module!r}, so sublayer states "
                    "cannot be captured for this architecture (see docs/open-question.md)"
                ) from None
            if spec.attn_output_is_input:
                handles.append(mod.register_forward_pre_hook(lambda m, i: records["attn"].append(first(i))))
            else:
                handles.append(mod.register_forward_hook(lambda m, i, o: records["attn"].append(first(o))))
    if spec.final_norm_module:
        try:
            norm = model.get_submodule(spec.final_norm_module)
        except AttributeError:
            for handle in handles:
                handle.remove()
            raise InputError(f"{spec.name}: the registry's final norm {spec.final_norm_module!r} is not a module "
                             "of this model") from None
        handles.append(norm.register_forward_hook(lambda m, i, o: records["final"].append(first(o))))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


class Scratch:
    """Tensors reused from batch to batch, each a view of one flat buffer per name that
    grows as needed. A fresh tensor of some MB costs its page faults on first write, about
    as much as the operation that fills it (CPU, glibc); reusing the memory avoids that.
    A view is valid until the next `take` of the same name. `device` is a tensor's device
    (an indexed one on CUDA: "cuda" would never match "cuda:0" and reallocate each time)."""

    def __init__(self) -> None:
        self._flat: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape, dtype: torch.dtype, device) -> torch.Tensor:
        numel = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < numel or flat.dtype != dtype or flat.device != torch.device(device):
            flat = torch.empty(numel + numel // 4, dtype=dtype, device=device)  # headroom: batches grow
            self._flat[name] = flat
        return flat[:numel].view(shape)


def _stack(tensors, scratch: Scratch | None, name: str) -> torch.Tensor:
    if scratch is None:
        return torch.stack(tensors)
    first = tensors[0]
    return torch.stack(tensors, out=scratch.take(name, (len(tensors), *first.shape), first.dtype, first.device))


def _forward(loaded: LoadedModel, batch: dict, method: str, sublayers: bool, scratch: Scratch | None = None):
    """One batch: returns (depth states [P, B, T, H], attn sublayer [P, B, T, H] or None,
    projection [B, T, Hp] or None, final norm output [B, T, H] or None).
    scratch: stack the states into its buffers (valid until the next batch) instead of new tensors.
    A model with a final norm is always captured with hooks (`hidden_states` included): its
    output_hidden_states puts the norm's output at depth L, another kind of state than the
    raw residual at every other depth (verify_depths checked at load that the two agree
    everywhere else)."""
    spec = loaded.spec
    use_hooks = method == "hooks" or (method == "auto" and (not spec.hidden_states_reliable or sublayers)) \
        or spec.final_norm_module is not None
    with torch.inference_mode():
        if use_hooks:
            with _hooks(loaded.model, spec, sublayers) as rec:
                loaded.model(**batch)
            depth = rec["depth"]
            if len(depth) != spec.layers + 1:
                raise InputError(f"{spec.name}: hooks saw {len(depth)} depths, expected {spec.layers + 1}")
            states = _stack(depth, scratch, "states")
            mid = None
            if sublayers:
                mid = _stack([torch.full_like(depth[0], float("nan")), *rec["attn"]], scratch, "mid")
            final = rec["final"][0] if rec["final"] else None
        else:
            out = loaded.model(**batch, output_hidden_states=True)
            hidden = getattr(out, "hidden_states", None)
            if hidden is None or len(hidden) != spec.layers + 1:
                fix = (
                    "capture with method 'hooks' or 'auto' (its registry entry already says hidden_states_reliable=False)"
                    if not spec.hidden_states_reliable
                    else "set hidden_states_reliable=False in its registry entry to capture with hooks"
                )
                raise InputError(f"{spec.name}: the model ignored output_hidden_states; {fix}")
            states, mid, final = _stack(hidden, scratch, "states"), None, None
        proj = None
        if loaded.projection is not None:
            proj = loaded.projection(states[-1] if final is None else final)
    return states, mid, proj, final


class _RowLists(Sequence):
    """One of a tokenized batch's per-row lists (the unpadded tokens, word ids or character
    offsets of each text), made when a row is first read: the streaming engine reads those
    of a few kept texts only, and building all of them (with the offsets the tokenizer
    returns only on request) cost about as much as the tokenizer call itself. `enc` is the
    batch's BatchEncoding (a fast tokenizer's: its `encodings` hold every row's tokens,
    word ids and offsets), `lens` each row's token count, `texts` the rows' model texts
    (word ids are split from them: `text_word_ids`)."""

    def __init__(self, enc, lens: list[int], kind: str, texts: Sequence[str] = ()) -> None:
        self._enc, self._lens, self._kind, self._texts = enc, lens, kind, texts
        self._rows: list = [None] * len(lens)

    def __len__(self) -> int:
        return len(self._lens)

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[i] for i in range(*b.indices(len(self)))]
        if self._rows[b] is None:
            row, n = self._enc.encodings[b], self._lens[b]
            if self._kind == "tokens":
                self._rows[b] = row.tokens[:n]
            elif self._kind == "word_ids":  # split from the text (text_word_ids), not the tokenizer's own
                self._rows[b] = text_word_ids(row.word_ids[:n], row.offsets[:n], self._texts[b])
            else:
                self._rows[b] = [tuple(o) for o in row.offsets[:n]]
        return self._rows[b]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return repr(list(self))


def token_ids(loaded: LoadedModel, items: list[tuple[str, str]]) -> list[list[int]]:
    """The input ids of every (text, role), special tokens included, truncated as capture
    truncates: what iter_batches sorts by, and (streaming) the content-token counts."""
    texts = [_model_text(loaded.spec, t, r) for t, r in items]
    known = loaded.recent_ids  # fit_to_limit's ids of texts within the limit: the same, untruncated
    missing = [t for t in dict.fromkeys(texts) if t not in known]
    fresh = dict(zip(missing, loaded.tokenizer(missing, add_special_tokens=True, truncation=True,
                                               max_length=loaded.max_tokens,
                                               return_attention_mask=False)["input_ids"])) if missing else {}
    return [known[t] if t in known else fresh[t] for t in texts]  # shared lists: callers only read them


def iter_batches(
    loaded: LoadedModel,
    items: list[tuple[str, str]],
    batch_size: int = 64,
    method: str = "auto",
    sublayers: bool = False,
    ids: list[list[int]] | None = None,
    reuse: bool = False,
) -> Iterator[tuple[list[int], LayerStates]]:
    """Capture `items` (text, role) in length-sorted batches; yields (original indices, states).

    Sorting by token count cuts padding; each yielded LayerStates is padded to its own batch.
    ids: token_ids(loaded, items), if the caller has them already (one tokenizer pass fewer).
    reuse: the states of every batch are stacked into the same memory (`Scratch`), so a
    yielded batch's tensors are valid only until the next batch is requested (for a
    consumer that reduces each batch before asking for the next, as streaming does).
    """
    scratch = Scratch() if reuse else None
    spec, tok = loaded.spec, loaded.tokenizer
    model_texts = [_model_text(spec, t, r) for t, r in items]
    lengths = [len(x) for x in (token_ids(loaded, items) if ids is None else ids)]
    order = sorted(range(len(items)), key=lambda i: (lengths[i], i))
    specials = torch.tensor(special_ids(loaded))
    bar = _progress(len(order), spec.name)  # issue 4: None unless stderr is a terminal
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        enc = tok(
            [model_texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=loaded.max_tokens,
            return_tensors="pt",
        )
        batch = {k: v.to(loaded.device) for k, v in enc.items()}
        states, mid, proj, final = _forward(loaded, batch, method, sublayers, scratch)
        attn = enc["attention_mask"].bool()
        content = attn & ~torch.isin(enc["input_ids"], specials)
        lens = attn.sum(1).tolist()
        if bar is not None:
            bar.update(len(rows))
        yield rows, LayerStates(
            texts=tuple(items[i][0] for i in rows),
            roles=tuple(items[i][1] for i in rows),
            model_texts=tuple(model_texts[i] for i in rows),
            states=states.float(),
            attn=attn.to(loaded.device),
            content=content.to(loaded.device),
            input_ids=enc["input_ids"].to(loaded.device),
            tokens=_RowLists(enc, lens, "tokens"),  # made per row when read
            word_ids=_RowLists(enc, lens, "word_ids", [model_texts[i] for i in rows]),
            offsets=_RowLists(enc, lens, "offsets"),
            sublayers={} if mid is None else {"attn": mid.float()},
            proj=None if proj is None else proj.float(),
            final=None if final is None else final.float(),
            summary="last" if spec.causal else "first",
            provenance=loaded.provenance,
        )
    if bar is not None:
        bar.close()


def _progress(total: int, name: str):
    """A tqdm bar over captured texts on stderr (shown after 1 s), or None when stderr is not a terminal."""
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"capture {name}", unit="text", delay=1.0, leave=False, file=sys.stderr)


def _pad_cat(tensors: list[torch.Tensor], dim_t: int, fill) -> torch.Tensor:
    width = max(t.shape[dim_t] for t in tensors)
    padded = []
    for t in tensors:
        pad = width - t.shape[dim_t]
        if pad:
            shape = list(t.shape)
            shape[dim_t] = pad
            t = torch.cat([t, torch.full(shape, fill, dtype=t.dtype, device=t.device)], dim=dim_t)
        padded.append(t)
    return padded


def capture(
    loaded: LoadedModel,
    sentences: SentenceSet,
    batch_size: int = 64,
    method: str = "auto",
    sublayers: bool = False,
) -> LayerStates:
    """Every text of `sentences` at every depth, in the order of `texts_of(sentences)`."""
    items = texts_of(sentences)
    check_batch_invariance(loaded, items, method)
    parts = list(iter_batches(loaded, items, batch_size, method, sublayers))
    order = [i for rows, _ in parts for i in rows]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    inverse = inverse.to(loaded.device)
    batches = [b for _, b in parts]

    def cat(tensors, dim_t, dim_n, fill):
        return torch.cat(_pad_cat(tensors, dim_t, fill), dim=dim_n).index_select(dim_n, inverse)

    def lst(name):
        flat = [x for b in batches for x in getattr(b, name)]
        return [flat[int(j)] for j in inverse.tolist()]

    states = LayerStates(
        texts=tuple(t for t, _ in items),
        roles=tuple(r for _, r in items),
        model_texts=tuple(lst("model_texts")),
        states=cat([b.states for b in batches], 2, 1, 0.0),
        attn=cat([b.attn for b in batches], 1, 0, False),
        content=cat([b.content for b in batches], 1, 0, False),
        input_ids=cat([b.input_ids for b in batches], 1, 0, 0),
        tokens=lst("tokens"),
        word_ids=lst("word_ids"),
        offsets=lst("offsets"),
        sublayers={
            k: cat([b.sublayers[k] for b in batches], 2, 1, 0.0) for k in (batches[0].sublayers if batches else {})
        },
        proj=cat([b.proj for b in batches], 1, 0, 0.0) if batches and batches[0].proj is not None else None,
        provenance={**loaded.provenance, "sentence_set": sentences.name, "sentence_set_sha256": sentences.sha256},
        final=cat([b.final for b in batches], 1, 0, 0.0) if batches and batches[0].final is not None else None,
        summary="last" if loaded.spec.causal else "first",
    )
    check_finite(states, loaded.spec.name)
    return states


def sentence_embeddings(states: LayerStates, pooling: str | None = None) -> torch.Tensor:
    """The model's sentence embedding of every text [N, H]: its pooling (default: the one in
    its provenance, i.e. the model's own) of the final stage, which is the final norm's
    output where the model has one and depth L otherwise. sentence-transformers' Dense and
    Normalize modules (recorded in provenance) are not applied."""
    pooling = pooling or states.provenance.get("pooling", "mean")
    x = states.final if states.final is not None else states.states[-1]
    return M.pool(x[None], states.attn, pooling, states.summary)[0]


# A sentence's states must not depend on its batch: its largest relative difference (per token
# vector, over every depth and the final stage) alone against in a padded batch. float32 and
# float64 runs fail above 1e-4 (the bound; MiniLM measures ~1e-6); 16-bit runs, whose
# kernels round differently by batch shape, above 3e-2 (a few bfloat16 ulps).
BATCH_INVARIANCE_TEXTS = 3
BATCH_INVARIANCE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-2}


def check_batch_invariance(loaded: LoadedModel, items: list[tuple[str, str]], method: str = "auto",
                           ids: list[list[int]] | None = None) -> dict:
    """A few texts of `items` (the shortest, the median and the second longest) captured alone
    and in one batch with the longest (so every one of them is padded); the largest relative
    difference ||alone - batched|| / ||alone|| over their tokens, depths and final stage goes
    into the provenance (`batch_invariance`), and above the tolerance the run fails with one
    line naming the model and the text. Four short forward passes."""
    spec = loaded.spec
    texts = list(dict.fromkeys(_model_text(spec, t, r) for t, r in items))
    record = {"texts": 0, "max_rel_diff": None, "padding_side": loaded.tokenizer.padding_side}
    if len(texts) >= 2:
        lengths = dict(zip((_model_text(spec, t, r) for t, r in items),
                           (len(x) for x in (token_ids(loaded, items) if ids is None else ids))))
        order = [t for _, _, t in sorted((lengths[t], i, t) for i, t in enumerate(texts))]
        longest = order[-1]
        chosen = list(dict.fromkeys(t for t in (order[0], order[len(order) // 2], order[-2]) if t != longest))
        chosen = chosen[:BATCH_INVARIANCE_TEXTS]
        tol = BATCH_INVARIANCE_TOLERANCE.get(loaded.dtype, 1e-4)

        def run(batch_texts):
            enc = loaded.tokenizer(batch_texts, padding=True, truncation=True, max_length=loaded.max_tokens,
                                   return_tensors="pt")
            states, _, _, final = _forward(loaded, {k: v.to(loaded.device) for k, v in enc.items()}, method, False)
            x = states if final is None else torch.cat([states, final[None]])
            return x.float(), enc["attention_mask"].bool().to(loaded.device)

        together, mask = run(chosen + [longest])
        worst, worst_text = 0.0, chosen[0]
        for row, text in enumerate(chosen):
            alone, _ = run([text])
            if int(mask[row].sum()) != alone.shape[2]:  # pragma: no cover - one tokenizer, one text
                raise InputError(f"{spec.name}: {text[:60]!r} has another token count in its batch")
            batched = together[:, row][:, mask[row]]
            if not (torch.isfinite(batched).all() and torch.isfinite(alone).all()):
                continue  # NaN or inf: the run's check_finite reports it with its depth and text
            diff = torch.linalg.vector_norm(batched - alone[:, 0], dim=-1)
            rel = float((diff / torch.linalg.vector_norm(alone[:, 0], dim=-1).clamp_min(1e-30)).max())
            if rel > worst:
                worst, worst_text = rel, text
        record.update(texts=len(chosen), batch=len(chosen) + 1, max_rel_diff=worst, tolerance=tol)
        if worst > tol:
            raise InputError(f"{spec.name}: the states of {worst_text[:60]!r} depend on its batch (relative "
                             f"difference {worst:.2g} alone vs in a padded batch, above {tol:g})")
    loaded.provenance["batch_invariance"] = record
    return record


def check_finite(states: LayerStates, name: str) -> None:
    """NaN or inf anywhere a real token sits is bad input, never silently averaged."""
    bad = ~torch.isfinite(states.states) & states.attn[None, :, :, None]
    if bad.any():
        depth, row = [int(x) for x in bad.nonzero()[0][:2]]
        raise InputError(
            f"{name}: hidden states contain NaN or inf (first at depth {depth}, text {states.texts[row][:60]!r})"
        )


