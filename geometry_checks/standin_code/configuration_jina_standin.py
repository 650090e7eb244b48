"""Configuration of the jina-colbert-v2 stand-in: an XLM-RoBERTa-large shaped encoder with
rotary position embeddings (the fields jina's XLMRobertaFlashConfig reads)."""
from transformers import PretrainedConfig


class XLMRobertaFlashConfig(PretrainedConfig):
    # Same class name as jina's configuration (jinaai/xlm-roberta-flash-implementation);
    # the code is this project's own.
    model_type = "xlm-roberta-flash-standin"

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        intermediate_size: int = 4096,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 8194,
        type_vocab_size: int = 1,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        position_embedding_type: str = "rotary",
        rotary_emb_base: float = 10000.0,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        use_flash_attn: bool = True,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.vocab_size = vocab_size
        # jina's config has this switch; the stand-in always runs plain attention, but keeps
        # the field so that the registry's config override (use_flash_attn=False) is exercised.
        self.use_flash_attn = use_flash_attn
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.rotary_emb_base = rotary_emb_base
