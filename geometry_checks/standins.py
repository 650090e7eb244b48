"""Stand-ins: random-weight models in the exact architecture of the real ones.

`build_standin(name, directory, seed)` writes a model directory that
`loader.resolve(name, {name: directory})` and `loader.load` load through the same code
path as the real weights, so CI exercises the real loading, hook and projection paths
without network access or the real checkpoints. The numbers a stand-in produces mean
nothing; only shapes, module paths, token handling and code paths are real.

mxbai (mixedbread-ai/mxbai-embed-large-v1)
    transformers BertModel, 24 layers x 1024, 16 heads, intermediate 4096, vocab 30522,
    512 positions, 2 token types; weights saved as float16 like the real checkpoint;
    sentence-transformers files (modules.json, sentence_bert_config.json,
    1_Pooling/config.json with CLS pooling) like the real repository. The tokenizer is a
    small lowercase WordPiece vocabulary of this project's own (specials at the real ids:
    [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103; every ASCII character, with
    ##-continuations, plus common English words), so any English text tokenizes; only
    ids below its size are ever produced while the model keeps 30522 embedding rows.

colbert (jinaai/jina-colbert-v2)
    custom code (geometry_checks/standin_code, copied into the directory, config
    `auto_map`, loaded with trust_remote_code=True) with the module names of jina's
    XLM-RoBERTa flash implementation: `emb_ln`, `encoder.layers[i]` (mixer/norm1/mlp/norm2,
    post-norm), rotary attention, 24 blocks x 1024, 16 heads, intermediate 4096. Saved as
    stanford ColBERT saves `HF_ColBERT` (keys `roberta.*` plus a bias-free `linear.weight`
    1024 -> 128, bfloat16 like the real checkpoint), so AutoModel drops `linear.weight`
    as it does for the real model. Its forward ignores `output_hidden_states` (older jina
    revisions do). The only deliberate difference from the real model is the vocabulary:
    4096 embedding rows and a small XLM-R style Unigram tokenizer of this project's own
    (<s> <pad> </s> <unk> ... <mask>, then [QueryMarker] [DocumentMarker] as added
    special tokens) instead of 250002 SentencePiece pieces + the two markers.

A directory holds `standin.json` (name, seed, format); building into a directory that
already holds the same stand-in returns at once, one holding another stand-in is rebuilt
in place, and a non-empty directory that is not a stand-in is refused.
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import InputError

FORMAT = 1
STAMP = "standin.json"
CODE_DIR = Path(__file__).resolve().parent / "standin_code"
COLBERT_CODE = ("configuration_jina_standin.py", "modeling_jina_standin.py")
COLBERT_VOCAB_SIZE = 4096
COLBERT_PROJECTION_DIM = 128
QUERY_MARKER, DOCUMENT_MARKER = "[QueryMarker]", "[DocumentMarker]"

# Characters every stand-in tokenizer covers: printable ASCII and common typography.
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a3\u20ac\u00b0"
DIGITS = "0123456789"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er", "ers", "est", "ion", "ions", "al", "ment", "ness", "ful", "able", "n't")
# Common English words, so that ordinary sentences tokenize mostly to whole words.
WORDS = """
the of and to a in is it you that he was for on are with as i his they be at one have this from or had by not
but what some we can out other were all there when up use your how said an each she which do their if will way
about many then them would like so these her long make thing see him two has look more day could go come did my
no most who over know than call first down side been now find any new work part take get place made live where
after back little only round man year came show every good me give our under name very through just form much
great think say help low line before turn cause same mean differ move right boy old too does tell sentence set
three want air well also play small end put home read hand port large spell add even land here must big high such
follow act why ask men change went light kind off need house picture try us again animal point mother world near
build self earth father head stand own page should country found answer school grow study still learn plant
cover food sun four between state keep eye never last let thought city tree cross farm hard start might story saw
far sea draw left late run while press close night real life few north open seem together next white children
begin got walk example ease paper group always music those both mark often letter until mile river car feet care
second book carry took science eat room friend began idea fish mountain stop once base hear horse cut sure watch
color face wood main enough plain girl usual young ready above ever red list though feel talk bird soon body dog
family direct pose leave song measure door product black short numeral class wind question happen complete ship
area half rock order fire south problem piece told knew pass since top whole king space heard best hour better
true during hundred five remember step early hold west ground interest reach fast verb sing listen six table
travel less morning ten simple several vowel toward war lay against pattern slow center love person money serve
appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark
machine note wait plan figure star box noun field rest correct able pound done beauty drive stood contain front
teach week final gave green oh quick develop ocean warm free minute strong special mind behind clear tail
produce fact street inch multiply nothing course stay wheel full force blue object decide surface deep moon
island foot system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran check
game shape equate hot miss brought heat snow tire bring yes distant fill east paint language among cat dog bank
stock market surged plunged rose fell price prices shares company investors report rate rates interest bank
doctor patient nurse hospital teacher student students court judge law police car road train station weather
model models vector vectors token tokens layer layers word words meaning query document search retrieval
""".split()


def build_standin(name: str, directory: Path, seed: int = 0) -> Path:
    """Write the stand-in for registered model `name` into `directory` and return it.

    Weights are random (torch.manual_seed(seed), normal(0, 0.02), LayerNorms at 1/0) in the
    real model's architecture; the global RNG state is left as it was.
    """
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise InputError(
            f"no stand-in for model {name!r}: stand-ins exist for {', '.join(sorted(BUILDERS))}"
        ) from None
    directory = Path(directory)
    stamp = {"standin_of": name, "seed": int(seed), "format": FORMAT}
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: is a file; a stand-in needs a directory")
    existing = _read_stamp(directory)
    if existing == stamp:
        return directory
    if existing is not None:  # another or an unfinished stand-in: ours to replace
        shutil.rmtree(directory)
    elif directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory}: not empty and not a stand-in directory; give an empty or new directory")
    directory.mkdir(parents=True, exist_ok=True)
    _write_stamp(directory, {**stamp, "complete": False})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        builder(directory)
    _write_stamp(directory, stamp)
    return directory


def _write_stamp(directory: Path, stamp: dict) -> None:
    tmp = directory / (STAMP + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    tmp.replace(directory / STAMP)


def _read_stamp(directory: Path) -> dict | None:
    try:
        return json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- weights


@contextlib.contextmanager
def _fast_construction(dtype: torch.dtype):
    """Build modules in `dtype` without running any weight initialisation (done once, after)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


@torch.no_grad()
def _randomise(model: nn.Module, std: float = 0.02) -> None:
    """BERT-style init in place: Linear/Embedding weights normal(0, std), biases 0, LayerNorms 1/0."""
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif own:
            raise TypeError(f"stand-in init does not know how to initialise {type(module).__name__}")


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- mxbai


def _wordpiece_vocab() -> list[str]:
    """BERT-uncased layout: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, then pieces."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(PUNCTUATION + DIGITS + LETTERS)
    pieces += [f"##{c}" for c in LETTERS + DIGITS]
    pieces += WORDS
    pieces += [f"##{s}" for s in SUFFIXES if "'" not in s]
    seen = set(vocab)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            vocab.append(piece)
    return vocab


def _build_mxbai(directory: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    config = BertConfig(
        vocab_size=30522,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        hidden_act="gelu",
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        initializer_range=0.02,
        use_cache=False,
    )
    with _fast_construction(torch.float16):
        model = BertModel(config)
    _randomise(model, config.initializer_range)
    model.save_pretrained(directory)
    del model

    vocab = _wordpiece_vocab()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab={piece: i for i, piece in enumerate(vocab)}, do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(directory)

    _write_json(
        directory / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    _write_json(directory / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _write_json(
        directory / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": 1024,
            "pooling_mode_cls_token": True,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )


# --------------------------------------------------------------------------- colbert


def _unigram_vocab() -> list[tuple[str, float]]:
    """XLM-R layout: <s> 0, <pad> 1, </s> 2, <unk> 3, pieces, <mask> last. Cased, `▁` marks a word start.

    Scores are log-probabilities: whole words beat suffix splits beat single characters,
    and any ASCII text has a segmentation without <unk>.
    """
    vocab: dict[str, float] = {"<s>": 0.0, "<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "\u2581": -10.0}
    chars = PUNCTUATION + DIGITS + LETTERS + LETTERS.upper()
    for c in chars:
        vocab.setdefault(f"\u2581{c}", -11.0)
    for c in chars:
        vocab.setdefault(c, -12.0)
    for s in SUFFIXES:
        vocab.setdefault(s, -8.0)
    for word in WORDS:
        vocab.setdefault(f"\u2581{word}", -6.0)
        vocab.setdefault(f"\u2581{word.capitalize()}", -6.5)
    return list(vocab.items()) + [("<mask>", 0.0)]


def _build_colbert(directory: Path) -> None:
    from transformers import XLMRobertaTokenizer

    from .standin_code import modeling_jina_standin as modeling
    config = modeling.XLMRobertaFlashConfig(
        vocab_size=COLBERT_VOCAB_SIZE,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        hidden_act="gelu",
        max_position_embeddings=8194,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        position_embedding_type="rotary",
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=0.02,
    )
    config.auto_map = {
        "AutoConfig": "configuration_jina_standin.XLMRobertaFlashConfig",
        "AutoModel": "modeling_jina_standin.XLMRobertaModel",
    }
    with _fast_construction(torch.bfloat16):
        model = modeling.HF_ColBERT(config, projection_dim=COLBERT_PROJECTION_DIM)
    _randomise(model, config.initializer_range)
    model.save_pretrained(directory)
    del model
    for name in COLBERT_CODE:
        shutil.copyfile(CODE_DIR / name, directory / name)

    vocab = _unigram_vocab()
    tokenizer = XLMRobertaTokenizer(vocab=vocab, model_max_length=8194)
    tokenizer.add_special_tokens({"extra_special_tokens": [QUERY_MARKER, DOCUMENT_MARKER]})
    ids = tokenizer.convert_tokens_to_ids([QUERY_MARKER, DOCUMENT_MARKER])
    if ids != [len(vocab), len(vocab) + 1] or len(tokenizer) > COLBERT_VOCAB_SIZE:
        raise RuntimeError(f"colbert stand-in tokenizer: markers at {ids}, {len(tokenizer)} ids")
    tokenizer.save_pretrained(directory)


BUILDERS: dict[str, Callable[[Path], None]] = {"mxbai": _build_mxbai, "colbert": _build_colbert}
