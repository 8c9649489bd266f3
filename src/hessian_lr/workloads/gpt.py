"""nanoGPT's character-level GPT, written in the package (same architecture and initialisation).

Source: nanoGPT (Karpathy, https://github.com/karpathy/nanoGPT), ``model.py``: token and learned
position embeddings, dropout, ``n_layer`` pre-LayerNorm blocks — causal multi-head self-attention (one
fused q/k/v projection, ``scaled_dot_product_attention`` with attention dropout, an output projection
and residual dropout) and an MLP of width ``4·n_embd`` with exact GELU and dropout — a final
LayerNorm and a read-out tied to the token embedding (one matrix). Linear and embedding weights
N(0, 0.02²), biases 0, and each block's two output projections (``c_proj``) N(0, (0.02/√(2·n_layer))²),
as GPT-2 scales its residual branches.

Configurations (:data:`CONFIGS`): ``"reference"`` is nanoGPT's ``config/train_shakespeare_char.py``
(6 layers, 6 heads, width 384, context 256, dropout 0.2, and no biases in Linear and LayerNorm —
nanoGPT's ``train.py`` default ``bias = False``); nanoGPT counts 10.65M parameters for it with the
65-character vocabulary (its count leaves out the position embeddings: 10,646,784; with them
10,745,088). ``"cpu"`` is nanoGPT's README configuration for a CPU (4 layers, 4 heads, width 128,
context 64, no dropout): 795,904 parameters counted the same way, 804,096 with the positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["GPTConfig", "CONFIGS", "GPT"]


@dataclass(frozen=True)
class GPTConfig:
    """A GPT's shape.

    Attributes:
        context: the longest input (``block_size``); vocab_size: tokens; n_layer: blocks;
        n_head: attention heads (divides ``n_embd``); n_embd: width; dropout: the probability of
        every dropout; bias: biases in Linear and LayerNorm layers.
    """

    context: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("context", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


# nanoGPT's shakespeare_char configuration and its README's CPU one (vocab_size set from the data)
CONFIGS = {
    "reference": dict(context=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False),
    "cpu": dict(context=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
}


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with attention and residual dropout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        q, k, v = (t.view(n, length, self.n_head, -1).transpose(1, 2) for t in self.c_attn(x).split(width, dim=2))
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(n, length, width)))


class MLP(nn.Module):
    """Linear → GELU → Linear (width ``4·n_embd``) → dropout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(nn.functional.gelu(self.c_fc(x))))


class Block(nn.Module):
    """``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's GPT (see the module docstring): token ids ``[B, T]`` → logits ``[B, T, vocab]`` at
    every position (the training loss needs them all).

    Args:
        config: the shape (:class:`GPTConfig`).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.context, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying: one matrix embeds and reads out
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_parameters(self, include_positions: bool = True) -> int:
        """Distinct parameters (the tied matrix once); nanoGPT's reported count leaves out the
        position embeddings (``include_positions=False``)."""
        total = sum(p.numel() for p in self.parameters())
        return total if include_positions else total - self.wpe.weight.numel()

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.config.context:
            raise ValueError(f"a sequence of {length} tokens is longer than the context {self.config.context}")
        positions = torch.arange(length, device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
