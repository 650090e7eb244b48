"""Words are split from the text, the same way for every tokenizer (capture.text_word_ids).

The tokenizers' own word ids disagree: BERT's and MPNet's split at whitespace and at every
punctuation character, SmolLM2's byte-level BPE keeps the space before a word inside it
(`Ġrose`) and groups punctuation runs (`"!`), and Gemma 3's gives a whole text one word id.
These tests pin the split on hand-made offsets and on the real tokenizers, and hold it to
the BERT tokenizers' own word ids (MiniLM's and MPNet's measurements must not move).
"""
import json

import pytest

from geometry_checks import loader
from geometry_checks.capture import text_word_ids, word_spans
from geometry_checks.paths import DEFAULT_SENTENCES

TOKENIZERS = [pytest.param("minilm", marks=pytest.mark.minilm, id="minilm"),
              pytest.param("mpnet", marks=pytest.mark.mpnet, id="mpnet"),
              pytest.param("smollm2", marks=pytest.mark.smollm2, id="smollm2"),
              pytest.param("gemma3", marks=pytest.mark.gemma3, id="gemma3")]
BERT_LIKE = {"minilm", "mpnet"}


def words_of(ids, offsets, text):
    return [text[start:end] for start, end, _ in word_spans(ids, offsets, text)]


def test_one_tokenizer_word_is_split_at_whitespace_and_punctuation():
    """Gemma 3's layout: one word id for the text, spaces inside the tokens, a whitespace-only token."""
    text = "It was  here, e.g."
    pieces = [(None, (0, 0)), (0, (0, 2)), (0, (2, 6)), (0, (6, 8)), (0, (8, 12)), (0, (12, 13)), (0, (13, 15)),
              (0, (15, 16)), (0, (16, 17)), (0, (17, 18))]  # <bos> It ▁was ▁▁ here , ▁e . g .
    ids = text_word_ids([w for w, _ in pieces], [o for _, o in pieces], text)
    assert ids == [None, 0, 1, None, 2, 3, 4, 5, 6, 7]
    assert words_of(ids, [o for _, o in pieces], text) == ["It", "was", "here", ",", "e", ".", "g", "."]


def test_a_word_keeps_its_sub_tokens_and_never_splits_a_token():
    """SmolLM2's layout: `P rices` is one word; `'t` and `"!` are single tokens, so single words."""
    text = "Prices wasn't \"no\"!"
    pieces = [(0, (0, 1)), (0, (1, 6)), (1, (6, 11)), (2, (11, 13)), (3, (13, 15)), (4, (15, 17)), (5, (17, 19))]
    ids = text_word_ids([w for w, _ in pieces], [o for _, o in pieces], text)
    assert words_of(ids, [o for _, o in pieces], text) == ["Prices", "wasn", "'t", '"', "no", '"!']
    assert ids == [0, 0, 1, 2, 3, 4, 5]


def test_bytes_of_one_character_stay_one_word():
    """A byte-level BPE can split one character over two tokens with the same offsets."""
    text = "a — b"
    ids = text_word_ids([0, 1, 1, 2], [(0, 1), (1, 3), (2, 3), (3, 5)], text)
    assert ids == [0, 1, 1, 2]
    assert words_of(ids, [(0, 1), (1, 3), (2, 3), (3, 5)], text) == ["a", "—", "b"]


@pytest.fixture(scope="module", params=TOKENIZERS)
def tokenizer(request):
    from transformers import AutoTokenizer

    ref = loader.resolve(request.param)
    if not ref.is_dir:
        pytest.skip(loader.how_to_supply(ref.spec))
    return request.param, AutoTokenizer.from_pretrained(ref.location)


def split(tok, text):
    enc = tok(text, return_offsets_mapping=True)
    ids = text_word_ids(enc.word_ids(), enc["offset_mapping"], text)
    return ids, words_of(ids, enc["offset_mapping"], text), enc


def test_words_of_a_sentence_are_its_words(tokenizer):
    name, tok = tokenizer
    assert split(tok, "Prices rose sharply today")[1] == ["Prices", "rose", "sharply", "today"]
    # punctuation is a word of its own, as BERT's tokenizer makes it; a token is never split
    # (SmolLM2's `'t` and `'s` are one token each, the others split the apostrophe off)
    words = split(tok, "The bank didn't cut rates, it raised them.")[1]
    apostrophe = ["didn", "'t"] if name == "smollm2" else ["didn", "'", "t"]
    assert words == ["The", "bank", *apostrophe, "cut", "rates", ",", "it", "raised", "them", "."]


def test_bert_tokenizers_keep_their_own_word_ids(tokenizer):
    """MiniLM and MPNet: the split is the tokenizer's own on every text of core.json (so their
    measurements and baselines do not change); the LMs' words carry no whitespace."""
    name, tok = tokenizer
    core = json.loads(DEFAULT_SENTENCES.read_text())
    texts = [*core["sentences"], *(t for pair in core["pairs"].values() for t in pair),
             *(t for r in core["retrieval"] for t in (r["query"], r["positive"], *r["negatives"]))]
    for text in texts:
        ids, words, enc = split(tok, text)
        if name in BERT_LIKE:
            assert ids == enc.word_ids(), text
        assert all(w and w == w.strip() for w in words), text
        assert " ".join(words).replace(" ", "") == text.replace(" ", ""), text


@pytest.mark.parametrize("name", [pytest.param("smollm2", marks=pytest.mark.smollm2),
                                  pytest.param("gemma3", marks=pytest.mark.gemma3)])
def test_converted_tokenizer_equals_autotokenizer(name):
    """loader reads a GGUF-converted directory's tokenizer.json with the generic Rust-backed
    class instead of AutoTokenizer's model class (GemmaTokenizer rebuilds it from the parsed
    JSON, seconds of every load): the same ids, offsets, word ids, special tokens and
    padding side, on core.json and on text with double spaces, an emoji and special-token text."""
    from transformers import AutoTokenizer

    ref = loader.resolve(name)
    if not ref.is_dir:
        pytest.skip(loader.how_to_supply(ref.spec))
    fast, own = loader._converted_tokenizer(ref), AutoTokenizer.from_pretrained(ref.location)
    assert fast is not None and fast.is_fast
    assert fast.all_special_ids == own.all_special_ids and fast.padding_side == own.padding_side
    assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (own.bos_token_id, own.eos_token_id,
                                                                         own.pad_token_id)
    core = json.loads(DEFAULT_SENTENCES.read_text())
    texts = [*core["sentences"], *(r["query"] for r in core["retrieval"]),
             "It wasn't  the dog's fault, e.g. \"no\"! \U0001F600 <bos> <pad>"]
    for kw in ({}, {"padding": True, "truncation": True, "max_length": 12}):
        a = fast(texts, return_offsets_mapping=True, return_special_tokens_mask=True, **kw)
        b = own(texts, return_offsets_mapping=True, return_special_tokens_mask=True, **kw)
        assert {k: a[k] for k in b} == dict(b)
        assert [a.word_ids(i) for i in range(len(texts))] == [b.word_ids(i) for i in range(len(texts))]


def test_other_directories_keep_autotokenizer():
    """MiniLM's bundled directory is no GGUF conversion: AutoTokenizer loads it as before."""
    assert loader._converted_tokenizer(loader.resolve("minilm")) is None


@pytest.mark.gemma3
def test_a_long_gemma3_text_is_cut_after_a_whole_word():
    """loader's cut to the token limit finds word ends with the same split: with Gemma 3's own
    word ids (one per text) no whole word ever fit, and every long text was rejected."""
    from types import SimpleNamespace

    ref = loader.resolve("gemma3")
    if not ref.is_dir:
        pytest.skip(loader.how_to_supply(ref.spec))
    tok = loader._converted_tokenizer(ref)
    loaded = SimpleNamespace(spec=ref.spec, tokenizer=tok, max_tokens=8)
    text = "The central bank raised interest rates again this morning"
    cut = loader._cut(loaded, text, "doc")
    assert cut is not None and text.startswith(cut) and text[len(cut)] == " "
    assert len(tok(cut)["input_ids"]) <= 8 and len(cut.split()) >= 4
