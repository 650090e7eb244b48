"""Modelling code of the jina-colbert-v2 stand-in.

Written for geometry-checks; it reproduces the *layout* of jina's XLM-RoBERTa "flash"
implementation (jinaai/xlm-roberta-flash-implementation, used by jinaai/jina-colbert-v2),
not its code:

    XLMRobertaModel
      embeddings.word_embeddings, embeddings.token_type_embeddings   (no position table: rotary)
      emb_ln                      LayerNorm after the embeddings: its output is depth 0
      emb_drop
      encoder.layers[i]           24 post-norm blocks, each returns one tensor [B, T, H]:
        mixer.Wqkv, mixer.out_proj, mixer.rotary_emb   fused QKV attention with rotary q/k
        dropout1, norm1            norm1(x + attn(x))  -- the post-attention state
        mlp.fc1, mlp.fc2           GELU feed-forward
        dropout2, norm2            norm2(h + mlp(h))   -- the block output
      pooler.dense

    HF_ColBERT (what the checkpoint is saved from, as stanford ColBERT saves it)
      roberta                     the XLMRobertaModel above  -> keys `roberta.*`
      linear                      bias-free 1024 -> 128 projection -> key `linear.weight`

Loading the directory with AutoModel builds `XLMRobertaModel` (config `auto_map`), which
strips the `roberta.` prefix and leaves `linear.weight` unused, exactly like the real
checkpoint: the projection has to be read from model.safetensors by the caller.

Like jina's older revisions, `XLMRobertaModel.forward` does not support
`output_hidden_states`: it logs a warning and returns no hidden states.

Attention is plain PyTorch (scores, mask, softmax, weighted sum); rotary embeddings are
the non-interleaved ("rotate half") kind over the whole head dimension, positions 0..T-1.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

from .configuration_jina_standin import XLMRobertaFlashConfig

logger = logging.getLogger(__name__)


class RotaryEmbedding(nn.Module):
    """Rotates query and key head vectors by position-dependent angles (no parameters)."""

    def __init__(self, dim: int, base: float):
        super().__init__()
        self.dim = int(dim)
        self.base = float(base)

    def _cos_sin(self, length: int, device, dtype):
        inv_freq = 1.0 / self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim)
        angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # [T, dim]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor):
        """q, k: [B, heads, T, head_dim] -> the same, rotated."""
        cos, sin = self._cos_sin(q.shape[-2], q.device, q.dtype)
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


class MHA(nn.Module):
    """Multi-head self-attention with one fused QKV projection, as jina's `mixer`."""

    def __init__(self, config: XLMRobertaFlashConfig):
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // self.num_heads
        self.Wqkv = nn.Linear(hidden, 3 * hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.rotary_emb = RotaryEmbedding(self.head_dim, config.rotary_emb_base)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, hidden = x.shape
        qkv = self.Wqkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # each [B, heads, T, d]
        q, k = self.rotary_emb(q, k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if key_padding_mask is not None:
            keep = key_padding_mask.bool()[:, None, None, :]
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = self.dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, length, hidden)
        return self.out_proj(out)


class Mlp(nn.Module):
    def __init__(self, config: XLMRobertaFlashConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        approximate = "tanh" if config.hidden_act in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh") else "none"
        self.activation = nn.GELU(approximate=approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class Block(nn.Module):
    """Post-norm transformer block: norm1(x + attention), then norm2(h + feed-forward)."""

    def __init__(self, config: XLMRobertaFlashConfig):
        super().__init__()
        self.mixer = MHA(config)
        self.dropout1 = nn.Dropout(config.hidden_dropout_prob)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)
        self.dropout2 = nn.Dropout(config.hidden_dropout_prob)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(self.dropout1(self.mixer(x, key_padding_mask)) + x)
        return self.norm2(self.dropout2(self.mlp(h)) + h)


class XLMRobertaEncoder(nn.Module):
    def __init__(self, config: XLMRobertaFlashConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states, key_padding_mask)
        return hidden_states


class XLMRobertaEmbeddings(nn.Module):
    """Token (+ token type) embeddings; rotary models have no position table."""

    def __init__(self, config: XLMRobertaFlashConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.type_vocab_size = config.type_vocab_size
        if self.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids)
        if self.type_vocab_size > 0:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        return embeddings


class XLMRobertaPooler(nn.Module):
    def __init__(self, config: XLMRobertaFlashConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class XLMRobertaPreTrainedModel(PreTrainedModel):
    config_class = XLMRobertaFlashConfig
    base_model_prefix = "roberta"

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class XLMRobertaModel(XLMRobertaPreTrainedModel):
    def __init__(self, config: XLMRobertaFlashConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        if config.position_embedding_type != "rotary":
            raise ValueError("the jina-colbert-v2 stand-in only implements rotary position embeddings")
        self.embeddings = XLMRobertaEmbeddings(config)
        self.emb_drop = nn.Dropout(config.hidden_dropout_prob)
        self.emb_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = XLMRobertaEncoder(config)
        self.pooler = XLMRobertaPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        # Old jina revisions accept anything else (output_hidden_states included), warn, and ignore it.
        for key, value in kwargs.items():
            if value is not None:
                logger.warning("the jina-colbert-v2 stand-in does not support %s; ignoring it", key)
        # position_ids are accepted for signature compatibility; rotary positions are 0..T-1.
        hidden = self.emb_drop(self.emb_ln(self.embeddings(input_ids, token_type_ids)))
        hidden = self.encoder(hidden, key_padding_mask=attention_mask)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        if return_dict is False:
            return hidden, pooled
        return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=hidden, pooler_output=pooled)


class HF_ColBERT(XLMRobertaPreTrainedModel):  # noqa: N801 - the name stanford ColBERT saves under
    """The encoder plus ColBERT's bias-free token projection, saved side by side."""

    def __init__(self, config: XLMRobertaFlashConfig, projection_dim: int = 128):
        super().__init__(config)
        self.roberta = XLMRobertaModel(config)
        self.linear = nn.Linear(config.hidden_size, projection_dim, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.linear(self.roberta(input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state)
