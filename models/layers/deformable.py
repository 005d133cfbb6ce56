"""Deformable attention over a (frequency, time) feature map, after DAT / DAT++ and DATAR.

References:
    Xia et al., "Vision Transformer with Deformable Attention" (DAT), CVPR 2022.
    Xia et al., "DAT++: Spatially Dynamic Vision Transformer with Deformable Attention", 2023
    (key/value sampling strides [8, 4, 2, 1] per stage, overlapped conv stem).
    Zhu, "DATAR: Deformable Audio Transformer for Audio Event Recognition", ICASSP 2024 (arXiv 2312.16228).

How one layer works (``x`` is ``(B, C, H, W)`` with H = frequency rows, W = time columns):

1. Queries ``q = W_q x`` at every position of the feature map.
2. The *audio offset generator* (below) turns the queries into one 2-D offset per reference point and group.
3. A uniform reference grid of key/value sampling points, one point every ``kv_stride`` pixels along each axis
   (``ceil(H / s_f) x ceil(W / s_t)`` points, so no axis has to be divisible by anything), is moved by those
   offsets; ``offset = tanh(raw) * offset_range`` in units of the reference spacing, so a point never moves more
   than ``offset_range * stride`` pixels from its reference.
4. The input is sampled at the moved points with ``F.grid_sample(mode='bilinear', align_corners=True)``; keys
   and values are 1x1 projections of the sampled features.
5. Every query attends to all sampled points of its group (standard softmax, or differential attention),
   with a relative position bias read at the continuous (query - sampled point) displacement.

Audio offset generator (our reading of DATAR, Sec. 2): as in DAT, the offsets are *query-agnostic*: they are
computed once per reference point from the whole (strided) query map and shared by every query of a group,
unlike Deformable DETR's per-query offsets. DATAR adapts the generator to spectrograms; we read that as
conditioning it on the time-frequency layout. A spectrogram is translation-invariant along time but not along
frequency (a shift in mel changes what a sound is), so the generator sees an absolute frequency coordinate
(``linspace(-1, 1, H)``, one extra input channel of its depthwise conv) and only relative time (the conv itself);
that keeps it independent of the window length ``T``. The generator is DAT's: depthwise ``k x k`` conv with the
key/value stride → LayerNorm over channels → GELU → 1x1 conv to 2 channels without bias, applied per group.

Relative position bias (our choice): a continuous, decomposed bias. Two small MLPs (1 → ``rpb_hidden`` → heads),
one per axis, read the log-spaced displacement ``sign(d) * log2(1 + |d|)`` in feature-map pixels along frequency
and along time, and the bias of a (query, point) pair is their sum (decomposed per axis as in MViTv2, Li et al.
2022; continuous and log-spaced as in Swin V2's CPB). DAT's bias table is tied to one feature-map size; the MLPs
work for any ``T`` without a table sized for ``T_max``, and they are differentiable in the sampled positions, so
the bias also trains the offsets. Because queries sit on a grid, the frequency term needs only ``H x Nk`` and the
time term ``W x Nk`` evaluations instead of ``H W x Nk`` for a joint 2-D MLP (15x fewer on a 10 s window's first
stage, where a joint MLP's GELUs took more time than the attention itself).

Export safety (see ARCHITECTURE.md): every grid is built with ``torch.arange`` / ``torch.linspace`` from run-time
tensor sizes, normalisers come from tensors (``H - 1`` clamped at 1, so one-pixel axes work), and nothing is
written in place into a slice, so an ONNX graph traced at one ``T`` is right at every other ``T``.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers.attention import HeadRMSNorm, lambda_init_fn

__all__ = ["DeformableAttention2d", "LayerNorm2d", "default_offset_kernel"]


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Return ``(freq, time)`` from an int or a pair of positive ints."""
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or any((not isinstance(p, int)) or p < 1 for p in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return pair  # type: ignore[return-value]


def default_offset_kernel(stride: int) -> int:
    """Odd depthwise kernel of the offset network for a sampling stride (DAT: 9, 7, 5, 3 for 8, 4, 2, 1)."""
    return {8: 9, 4: 7, 2: 5, 1: 3}.get(stride, 2 * (stride // 2) + 1 if stride > 1 else 3)


def _pixel_to_grid(pos: torch.Tensor, size: int | torch.Tensor) -> torch.Tensor:
    """Map pixel coordinates on an axis of ``size`` pixels to grid_sample's [-1, 1] (``align_corners=True``).

    The normaliser ``max(size - 1, 1)`` is a run-time tensor (the last element of ``arange(size)``), never a
    Python number frozen at trace time; a one-pixel axis maps pixel 0 to -1, which grid_sample reads as pixel 0.
    """
    last = torch.arange(size, device=pos.device, dtype=pos.dtype)[-1:]  # (1,) = size - 1
    return pos * (2.0 / last.clamp(min=1.0)) - 1.0


def _log_spaced(d: torch.Tensor) -> torch.Tensor:
    """Signed log-spacing of displacements in pixels (Swin V2 style), ~[-1, 1] for |d| up to 7 pixels."""
    return torch.sign(d) * torch.log2(1.0 + d.abs()) / 3.0


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each position's channel vector."""
        x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


class DeformableAttention2d(nn.Module):
    """Deformable multi-head attention on a ``(B, C, H, W)`` map; H = frequency, W = time.

    Args:
        dim: channels ``C``.
        num_heads: attention heads; must divide ``dim``.
        num_groups: offset groups; each group of ``num_heads / num_groups`` heads shares one set of sampling points.
        kv_stride: spacing of the reference grid in pixels, an int or ``(freq, time)``; a query sees
            ``ceil(H / s_f) * ceil(W / s_t)`` points per group.
        offset_range: largest offset, in units of the reference spacing (``tanh`` × this).
        offset_kernel: odd depthwise kernel of the offset network, int or ``(freq, time)``; default from the stride.
        freq_coord: feed the offset generator an absolute frequency coordinate (the audio offset generator).
        diff: differential attention ``(softmax(Q1 K1) - λ softmax(Q2 K2)) V``; pairs the heads of a group as
            :class:`models.layers.attention.DiffAttention` does, so ``num_heads / num_groups`` must be even.
        depth: block index in the network, for differential attention's ``λ_init``.
        rpb_hidden: hidden width of the two continuous relative-position-bias MLPs; 0 switches the bias off.
        fused_attn: use ``F.scaled_dot_product_attention`` (same result as the plain path; the plain path keeps
            the softmax in float32 and is what export uses by default).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.

    Example:
        >>> attn = DeformableAttention2d(32, num_heads=2, kv_stride=2)
        >>> attn(torch.zeros(1, 32, 16, 25)).shape
        torch.Size([1, 32, 16, 25])
    """

    def __init__(self, dim: int, num_heads: int, num_groups: int = 1, kv_stride: int | tuple[int, int] = 1,
                 offset_range: float = 2.0, offset_kernel: int | tuple[int, int] | None = None,
                 freq_coord: bool = True, diff: bool = False, depth: int = 0, rpb_hidden: int = 16,
                 fused_attn: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if num_groups < 1 or num_heads % num_groups != 0:
            raise ValueError(f"num_heads={num_heads} must be divisible by num_groups={num_groups}")
        if offset_range < 0:
            raise ValueError(f"offset_range must be >= 0, got {offset_range}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_groups = num_groups
        self.head_dim = dim // num_heads
        self.group_channels = dim // num_groups
        self.heads_per_group = num_heads // num_groups
        self.kv_stride = _pair(kv_stride, "kv_stride")
        if offset_kernel is None:
            offset_kernel = (default_offset_kernel(self.kv_stride[0]), default_offset_kernel(self.kv_stride[1]))
        kernel = _pair(offset_kernel, "offset_kernel")
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"offset_kernel must be odd so that sampling points sit on reference pixels, got {kernel}")
        self.offset_kernel = kernel
        self.offset_range = float(offset_range)
        self.freq_coord = freq_coord
        self.diff = diff
        if diff and self.heads_per_group % 2 != 0:
            raise ValueError(f"differential attention pairs heads within a group: num_heads / num_groups must be "
                             f"even, got {num_heads} / {num_groups}")
        self.fused_attn = fused_attn

        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

        c_off = self.group_channels + (1 if freq_coord else 0)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(c_off, c_off, kernel, stride=self.kv_stride, padding=(kernel[0] // 2, kernel[1] // 2),
                      groups=c_off),
            LayerNorm2d(c_off),
            nn.GELU(),
            nn.Conv2d(c_off, 2, 1, bias=False),
        )

        self.rpb_f = self.rpb_t = None
        if rpb_hidden > 0:
            self.rpb_f = nn.Sequential(nn.Linear(1, rpb_hidden), nn.GELU(), nn.Linear(rpb_hidden, self.heads_per_group))
            self.rpb_t = nn.Sequential(nn.Linear(1, rpb_hidden), nn.GELU(), nn.Linear(rpb_hidden, self.heads_per_group))

        if diff:
            # Differential Transformer convention, as models.layers.attention.DiffAttention: the num_heads softmax
            # maps of width d are paired into num_heads / 2 differential heads with values 2 d wide.
            self.lambda_init = float(lambda_init_fn(depth))
            self.lambda_q1 = nn.Parameter(torch.empty(self.head_dim).normal_(0.0, 0.1))
            self.lambda_k1 = nn.Parameter(torch.empty(self.head_dim).normal_(0.0, 0.1))
            self.lambda_q2 = nn.Parameter(torch.empty(self.head_dim).normal_(0.0, 0.1))
            self.lambda_k2 = nn.Parameter(torch.empty(self.head_dim).normal_(0.0, 0.1))
            self.head_norm = HeadRMSNorm(2 * self.head_dim)

    # ------------------------------------------------------------------ offsets and sampling points
    def compute_offsets(self, q: torch.Tensor) -> torch.Tensor:
        """Offsets of the sampling points in units of the reference spacing, each in ``[-range, range]``.

        Args:
            q: queries ``(B, C, H, W)``.

        Returns:
            ``(B * G, 2, Hk, Wk)``: channel 0 along frequency (rows), channel 1 along time (columns).
        """
        B, C, H, W = q.shape
        q_off = q.reshape(B * self.num_groups, self.group_channels, H, W)  # (B, C, H, W) -> (B*G, C/G, H, W)
        if self.freq_coord:
            fy = torch.linspace(-1.0, 1.0, H, device=q.device, dtype=q.dtype)
            fy = fy.reshape(1, 1, H, 1)  # (H,) -> (1, 1, H, 1)
            q_off = torch.cat([q_off, torch.zeros_like(q_off[:, :1]) + fy], dim=1)  # (B*G, C/G + 1, H, W)
        return torch.tanh(self.conv_offset(q_off)) * self.offset_range

    def sampling_positions(self, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates of the moved sampling points.

        Args:
            offsets: ``(B * G, 2, Hk, Wk)`` from :meth:`compute_offsets`.

        Returns:
            ``(pos_f, pos_t)``, each ``(B * G, Hk, Wk)`` in pixels of the input map.
        """
        Hk, Wk = offsets.shape[2], offsets.shape[3]
        sf, st = self.kv_stride
        ref_f = torch.arange(Hk, device=offsets.device, dtype=offsets.dtype) * sf  # (Hk,)
        ref_t = torch.arange(Wk, device=offsets.device, dtype=offsets.dtype) * st  # (Wk,)
        pos_f = ref_f.reshape(1, -1, 1) + offsets[:, 0] * sf  # (Hk,) -> (1, Hk, 1) + (B*G, Hk, Wk)
        pos_t = ref_t.reshape(1, 1, -1) + offsets[:, 1] * st  # (Wk,) -> (1, 1, Wk) + (B*G, Hk, Wk)
        return pos_f, pos_t

    def position_bias(self, H: int, W: int, pos_f: torch.Tensor, pos_t: torch.Tensor) -> torch.Tensor:
        """Relative position bias at the (query - sampled point) displacements: frequency term + time term.

        Args:
            H: rows of the query map.
            W: columns of the query map.
            pos_f: ``(B * G, Hk, Wk)`` sampled rows in pixels.
            pos_t: ``(B * G, Hk, Wk)`` sampled columns in pixels.

        Returns:
            ``(B, heads, H * W, Hk * Wk)``, one map per softmax head.
        """
        q_f = torch.arange(H, device=pos_f.device, dtype=pos_f.dtype).reshape(1, -1, 1, 1)  # (H,) -> (1, H, 1, 1)
        q_t = torch.arange(W, device=pos_t.device, dtype=pos_t.dtype).reshape(1, -1, 1, 1)  # (W,) -> (1, W, 1, 1)
        k_f = pos_f.flatten(1).reshape(pos_f.shape[0], 1, -1, 1)  # (B*G, Hk, Wk) -> (B*G, 1, Nk, 1)
        k_t = pos_t.flatten(1).reshape(pos_t.shape[0], 1, -1, 1)  # (B*G, Hk, Wk) -> (B*G, 1, Nk, 1)
        b_f = self.rpb_f(_log_spaced(q_f - k_f))  # (B*G, H, Nk, h/G)
        b_t = self.rpb_t(_log_spaced(q_t - k_t))  # (B*G, W, Nk, h/G)
        Nk = b_f.shape[2]
        b_f = b_f.reshape(-1, self.num_groups, H, 1, Nk, self.heads_per_group)  # -> (B, G, H, 1, Nk, h/G)
        b_t = b_t.reshape(-1, self.num_groups, 1, W, Nk, self.heads_per_group)  # -> (B, G, 1, W, Nk, h/G)
        bias = (b_f + b_t).permute(0, 1, 5, 2, 3, 4)  # (B, G, H, W, Nk, h/G) -> (B, G, h/G, H, W, Nk)
        return bias.reshape(-1, self.num_heads, H * W, Nk)  # -> (B, heads, H*W, Nk)

    # ------------------------------------------------------------------ attention
    def _softmax_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           bias: torch.Tensor | None) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d) + bias) v``; q ``(..., Nq, d)``, k ``(..., Nk, d)``, v ``(..., Nk, e)``."""
        if self.fused_attn:
            mask = None if bias is None else bias.to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.attn_drop.p if self.training else 0.0)
        logits = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)  # (..., Nq, Nk)
        if bias is not None:
            logits = logits + bias
        attn = torch.softmax(logits.float(), dim=-1).to(q.dtype)
        return self.attn_drop(attn) @ v  # (..., Nq, e)

    def lambda_value(self) -> torch.Tensor:
        """The differential weight ``exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init`` (float32)."""
        l1 = torch.exp(torch.sum(self.lambda_q1.float() * self.lambda_k1.float()))
        l2 = torch.exp(torch.sum(self.lambda_q2.float() * self.lambda_k2.float()))
        return l1 - l2 + self.lambda_init

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Attention of the queries over the sampled keys and values.

        Args:
            q: ``(B, C, Nq)`` queries, channels ordered head by head.
            k: ``(B, C, Nk)`` keys.
            v: ``(B, C, Nk)`` values.
            bias: ``(B, heads, Nq, Nk)`` or None.

        Returns:
            ``(B, C, Nq)``.
        """
        B, C = q.shape[0], q.shape[1]
        h, d = self.num_heads, self.head_dim
        q = q.reshape(B, h, d, -1).transpose(-2, -1)  # (B, C, Nq) -> (B, h, Nq, d)
        k = k.reshape(B, h, d, -1).transpose(-2, -1)  # (B, C, Nk) -> (B, h, Nk, d)
        if not self.diff:
            v = v.reshape(B, h, d, -1).transpose(-2, -1)  # (B, C, Nk) -> (B, h, Nk, d)
            out = self._softmax_attention(q, k, v, bias)  # (B, h, Nq, d)
            return out.transpose(-2, -1).reshape(B, C, -1)  # (B, h, Nq, d) -> (B, C, Nq)
        hd = h // 2
        q = q.reshape(B, hd, 2, q.shape[2], d)  # (B, h, Nq, d) -> (B, h/2, 2, Nq, d)
        k = k.reshape(B, hd, 2, k.shape[2], d)  # (B, h, Nk, d) -> (B, h/2, 2, Nk, d)
        v = v.reshape(B, hd, 2 * d, -1).transpose(-2, -1)  # (B, C, Nk) -> (B, h/2, Nk, 2d)
        b1 = b2 = None
        if bias is not None:
            bias = bias.reshape(B, hd, 2, bias.shape[2], bias.shape[3])  # (B, h, Nq, Nk) -> (B, h/2, 2, Nq, Nk)
            b1, b2 = bias[:, :, 0], bias[:, :, 1]
        lam = self.lambda_value().to(q.dtype)
        o1 = self._softmax_attention(q[:, :, 0], k[:, :, 0], v, b1)  # (B, h/2, Nq, 2d)
        o2 = self._softmax_attention(q[:, :, 1], k[:, :, 1], v, b2)
        out = self.head_norm(o1 - lam * o2) * (1.0 - self.lambda_init)
        return out.transpose(-2, -1).reshape(B, C, -1)  # (B, h/2, Nq, 2d) -> (B, C, Nq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deformable attention of every position of ``x`` ``(B, C, H, W)``; returns ``(B, C, H, W)``."""
        B, C, H, W = x.shape
        q = self.proj_q(x)
        offsets = self.compute_offsets(q)  # (B*G, 2, Hk, Wk)
        pos_f, pos_t = self.sampling_positions(offsets)
        grid = torch.stack([_pixel_to_grid(pos_t, W), _pixel_to_grid(pos_f, H)], dim=-1)  # (B*G, Hk, Wk, 2), (t, f)
        x_g = x.reshape(B * self.num_groups, self.group_channels, H, W)  # (B, C, H, W) -> (B*G, C/G, H, W)
        sampled = F.grid_sample(x_g, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled = sampled.reshape(B, C, offsets.shape[2], offsets.shape[3])  # (B*G, C/G, Hk, Wk) -> (B, C, Hk, Wk)
        k = self.proj_k(sampled).flatten(2)  # (B, C, Hk, Wk) -> (B, C, Nk)
        v = self.proj_v(sampled).flatten(2)  # (B, C, Hk, Wk) -> (B, C, Nk)
        bias = None if self.rpb_f is None else self.position_bias(H, W, pos_f, pos_t)
        out = self.attend(q.flatten(2), k, v, bias)  # (B, C, H, W) -> (B, C, H*W) -> (B, C, H*W)
        out = out.reshape(B, C, H, W)  # (B, C, H*W) -> (B, C, H, W)
        return self.proj_drop(self.proj_out(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.num_heads}, groups={self.num_groups}, kv_stride={self.kv_stride}, "
                f"offset_range={self.offset_range}, diff={self.diff}")
