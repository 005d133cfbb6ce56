"""Self-attention layers: multi-head attention and differential attention in two forms.

Every layer takes tokens ``(B, N, D)`` and returns ``(B, N, D)``. ``fused_attn=True`` runs
``F.scaled_dot_product_attention``; ``fused_attn=False`` runs the same arithmetic with explicit
matrices (softmax in float32). Both paths give the same result (tested); the plain path is the one
exported to ONNX, where it becomes plain MatMul/Softmax nodes.

Differential attention (Ye et al., 2024, "Differential Transformer", arXiv:2410.05258) computes
``(softmax(Q1 K1^T / sqrt(d)) - lambda * softmax(Q2 K2^T / sqrt(d))) V``:

- ``mode='diff'``: lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, with
  lambda_init = 0.8 - 0.6 exp(-0.3 depth), a per-head RMS norm and the output scaled by
  ``1 - lambda_init``.
- ``mode='asda'``: ASDA (Wang et al., Interspeech 2025, arXiv:2507.02666) fixes lambda = 0.1 and
  normalises over the whole embedding.

Heads (the one convention of the project; :class:`models.layers.deformable.DeformableAttention2d` with
``diff=True`` follows it too): differential attention keeps ``num_heads`` heads, each with two softmax
maps whose queries and keys are ``d = D / (2 num_heads)`` wide (:func:`diff_head_dim`) and one value
``2 d = D / num_heads`` wide, laid out head by head along the channels (head ``i`` owns channels
``[2 d i, 2 d (i + 1))``, its first map the first ``d`` of them); the projections and the parameter
count are those of multi-head attention (plus lambda and the norm), and any head count that works for
multi-head attention works here (the paper instead halves the head count to keep ``d``; pass
``num_heads // 2`` for that). The lambda vectors and lambda itself come from :func:`diff_lambda_vectors`
and :func:`diff_lambda`, shared by both layers.

Example:
    >>> import torch
    >>> attn = build_attention("diff", dim=32, num_heads=2, depth=1)
    >>> attn(torch.zeros(2, 7, 32)).shape
    torch.Size([2, 7, 32])
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Attention", "DiffAttention", "HeadRMSNorm", "lambda_init_fn", "diff_head_dim", "diff_lambda_vectors",
           "diff_lambda", "build_attention", "ATTENTION_KINDS"]

ATTENTION_KINDS = ("mha", "diff", "asda")


def lambda_init_fn(depth: int) -> float:
    """Initial differential weight for the layer at ``depth`` (0-based): ``0.8 - 0.6 exp(-0.3 depth)``."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


def diff_head_dim(dim: int, num_heads: int) -> int:
    """Query/key width ``d = dim / (2 num_heads)`` of one softmax map of a differential head.

    Raises:
        ValueError: when ``2 * num_heads`` does not divide ``dim``.
    """
    if num_heads < 1 or dim % (2 * num_heads) != 0:
        raise ValueError(f"differential attention needs 2 * num_heads dividing dim, got dim={dim}, "
                         f"num_heads={num_heads}")
    return dim // (2 * num_heads)


def diff_lambda_vectors(head_dim: int) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter, nn.Parameter]:
    """Fresh ``(lambda_q1, lambda_k1, lambda_q2, lambda_k2)``, each ``(head_dim,)``, drawn from N(0, 0.1^2) in order.

    Example:
        >>> q1, k1, q2, k2 = diff_lambda_vectors(8)
        >>> q1.shape
        torch.Size([8])
    """
    return tuple(nn.Parameter(torch.empty(head_dim).normal_(0.0, 0.1)) for _ in range(4))  # type: ignore[return-value]


def diff_lambda(lambda_q1: torch.Tensor, lambda_k1: torch.Tensor, lambda_q2: torch.Tensor, lambda_k2: torch.Tensor,
                lambda_init: float) -> torch.Tensor:
    """The Diff-Transformer weight ``exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init``, in float32 (a 0-d tensor)."""
    l1 = torch.exp(torch.sum(lambda_q1.float() * lambda_k1.float()))
    l2 = torch.exp(torch.sum(lambda_q2.float() * lambda_k2.float()))
    return l1 - l2 + lambda_init


class HeadRMSNorm(nn.Module):
    """RMS norm over the last dimension, computed in float32, with a learnable gain.

    Written out by hand because ``nn.RMSNorm`` has no ONNX export at opset 17.

    Args:
        dim: size of the normalised (last) dimension.
        eps: added to the mean square before the square root.

    Example:
        >>> import torch
        >>> HeadRMSNorm(4)(torch.ones(2, 4))
        tensor([[1.0000, 1.0000, 1.0000, 1.0000],
                [1.0000, 1.0000, 1.0000, 1.0000]], grad_fn=<MulBackward0>)
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (``(..., dim)``) to unit root mean square and scale it."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     drop: nn.Module) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` with the softmax in float32; q, k ``(..., N, d)``, v ``(..., N, e)``."""
    attn = (q * scale) @ k.transpose(-2, -1)  # (..., N, N)
    attn = attn.float().softmax(dim=-1).to(q.dtype)
    return drop(attn) @ v  # (..., N, e)


class Attention(nn.Module):
    """Multi-head self-attention with a fused (SDPA) and a plain path.

    Args:
        dim: token width D.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: bias on the query/key/value projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        fused_attn: use ``F.scaled_dot_product_attention``; otherwise explicit matrices.

    Example:
        >>> import torch
        >>> Attention(32, num_heads=4)(torch.zeros(1, 5, 32)).shape
        torch.Size([1, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, fused_attn: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the tokens of ``x`` ``(B, N, D)``."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3D) -> (B, N, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, d)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            x = _plain_attention(q, k, v, self.scale, self.attn_drop)
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, H, N, d) -> (B, N, D)
        return self.proj_drop(self.proj(x))


class DiffAttention(nn.Module):
    """Differential attention: the difference of two softmax maps cancels common-mode attention noise.

    Args:
        dim: token width D.
        num_heads: number of differential heads; each has two softmax maps of width ``D / (2 num_heads)``.
        depth: 0-based index of the layer, which sets ``lambda_init`` in ``mode='diff'``.
        mode: ``'diff'`` (Differential Transformer) or ``'asda'`` (fixed lambda = 0.1, whole-embedding norm).
        qkv_bias: bias on the query/key/value projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        fused_attn: use ``F.scaled_dot_product_attention`` for both maps; otherwise explicit matrices.
        asda_lambda: the fixed lambda of ``mode='asda'``.

    Example:
        >>> import torch
        >>> DiffAttention(32, num_heads=4, depth=2, mode="asda")(torch.zeros(1, 5, 32)).shape
        torch.Size([1, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int = 8, depth: int = 0, mode: str = "diff", qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, fused_attn: bool = True,
                 asda_lambda: float = 0.1) -> None:
        super().__init__()
        if mode not in ("diff", "asda"):
            raise ValueError(f"unknown differential attention mode {mode!r}; accepted: 'diff', 'asda'")
        self.mode = mode
        self.num_heads = num_heads
        self.head_dim = diff_head_dim(dim, num_heads)  # query/key width of one softmax map
        self.scale = self.head_dim ** -0.5
        self.fused_attn = fused_attn
        self.lambda_init = lambda_init_fn(depth)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        if mode == "diff":
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = diff_lambda_vectors(self.head_dim)
            self.norm = HeadRMSNorm(2 * self.head_dim)  # per differential head
            self.out_scale = 1.0 - self.lambda_init
        else:
            self.asda_lambda = float(asda_lambda)
            self.norm = HeadRMSNorm(dim)  # over the whole embedding
            self.out_scale = 1.0
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def lambda_value(self) -> torch.Tensor | float:
        """The current differential weight lambda."""
        if self.mode == "asda":
            return self.asda_lambda
        return diff_lambda(self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2, self.lambda_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the tokens of ``x`` ``(B, N, D)``."""
        B, N, D = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, N, D)
        q = q.reshape(B, N, h, 2, d).permute(3, 0, 2, 1, 4)  # (B, N, D) -> (2, B, h, N, d)
        k = k.reshape(B, N, h, 2, d).permute(3, 0, 2, 1, 4)  # (B, N, D) -> (2, B, h, N, d)
        v = v.reshape(B, N, h, 2 * d).transpose(1, 2)  # (B, N, D) -> (B, h, N, 2d)
        lam = self.lambda_value()
        if torch.is_tensor(lam):
            lam = lam.to(x.dtype)
        if self.fused_attn:
            p = self.attn_drop.p if self.training else 0.0
            o1 = F.scaled_dot_product_attention(q[0], k[0], v, dropout_p=p)  # (B, h, N, 2d)
            o2 = F.scaled_dot_product_attention(q[1], k[1], v, dropout_p=p)
            o = o1 - lam * o2
        else:
            a1 = (q[0] * self.scale) @ k[0].transpose(-2, -1)  # (B, h, N, N)
            a2 = (q[1] * self.scale) @ k[1].transpose(-2, -1)
            a1 = a1.float().softmax(dim=-1).to(x.dtype)
            a2 = a2.float().softmax(dim=-1).to(x.dtype)
            o = self.attn_drop(a1 - lam * a2) @ v  # (B, h, N, 2d)
        if self.mode == "diff":
            o = self.norm(o).transpose(1, 2).reshape(B, N, D)  # (B, h, N, 2d) -> (B, N, D)
        else:
            o = self.norm(o.transpose(1, 2).reshape(B, N, D))  # (B, h, N, 2d) -> (B, N, D)
        o = o * self.out_scale
        return self.proj_drop(self.proj(o))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, heads={self.num_heads}, lambda_init={self.lambda_init:.4f}"


def build_attention(kind: str, dim: int, num_heads: int, depth: int = 0, fused_attn: bool = True,
                    qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> nn.Module:
    """Build the attention layer named ``kind`` (``'mha'``, ``'diff'`` or ``'asda'``).

    Args:
        kind: attention option.
        dim: token width.
        num_heads: number of heads (see the module docstring for differential attention).
        depth: 0-based layer index (sets lambda_init of ``'diff'``).
        fused_attn: use the fused SDPA kernel.
        qkv_bias: bias on the query/key/value projection.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
    """
    if kind == "mha":
        return Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                         fused_attn=fused_attn)
    if kind in ("diff", "asda"):
        return DiffAttention(dim, num_heads, depth=depth, mode=kind, qkv_bias=qkv_bias, attn_drop=attn_drop,
                             proj_drop=proj_drop, fused_attn=fused_attn)
    raise ValueError(f"unknown attention {kind!r}; accepted: {', '.join(ATTENTION_KINDS)}")
