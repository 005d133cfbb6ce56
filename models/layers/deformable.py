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

Relative position bias (our choice): a continuous, decomposed bias. Two small MLPs (1 → ``rpb_hidden`` → maps),
one per axis, read the log-spaced displacement ``sign(d) * log2(1 + |d|)`` in feature-map pixels along frequency
and along time, and the bias of a (query, point) pair is their sum (decomposed per axis as in MViTv2, Li et al.
2022; continuous and log-spaced as in Swin V2's CPB). DAT's bias table is tied to one feature-map size; the MLPs
work for any ``T`` without a table sized for ``T_max``, and they are differentiable in the sampled positions, so
the bias also trains the offsets. Because queries sit on a grid, the frequency term needs only ``H x Nk`` and the
time term ``W x Nk`` evaluations instead of ``H W x Nk`` for a joint 2-D MLP (15x fewer on a 10 s window's first
stage, where a joint MLP's GELUs took more time than the attention itself).

Export safety (see docs/ARCHITECTURE.md): every grid is built with ``torch.arange`` / ``torch.linspace`` from run-time
tensor sizes, normalisers come from tensors (``H - 1`` clamped at 1, so one-pixel axes work), and nothing is
written in place into a slice, so an ONNX graph traced at one ``T`` is right at every other ``T``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers.attention import HeadRMSNorm, diff_head_dim, diff_lambda, diff_lambda_vectors, lambda_init_fn

__all__ = ["DeformableAttention2d", "LayerNorm2d", "SizeGrids", "default_offset_kernel"]


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Return ``(freq, time)`` from an int or a pair of positive ints."""
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or any((not isinstance(p, int)) or p < 1 for p in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return pair  # type: ignore[return-value]


def default_offset_kernel(stride: int) -> int:
    """Odd depthwise kernel of the offset network for a sampling stride (DAT: 9, 7, 5, 3 for 8, 4, 2, 1)."""
    return {8: 9, 4: 7, 2: 5, 1: 3}.get(stride, 2 * (stride // 2) + 1 if stride > 1 else 3)


# The relative position bias reads displacements d in pixels log-spaced (Swin V2 style): sign(d) log2(1 + |d|) / 3,
# about [-1, 1] for |d| up to 7 pixels; the constant 1 / (3 ln 2) is folded into the bias MLP's first weight.
_LOG_SPACING = 1.0 / (3.0 * math.log(2.0))


class SizeGrids(NamedTuple):
    """What deformable attention needs that depends only on the map size ``(H, W)`` and the stride.

    Attributes:
        ref: ``(1, Hk, Wk, 2)`` reference points in pixels, (time, freq) last.
        to_grid: ``(2,)`` scale from pixels to ``grid_sample``'s ``[-1, 1]`` (``2 / max(size - 1, 1)``), (time, freq).
        q_f: ``(1, H, 1, 1)`` query rows in pixels.
        q_t: ``(1, W, 1, 1)`` query columns in pixels.
        fy: ``(1, 1, H, W)`` absolute frequency coordinate ``linspace(-1, 1, H)`` of every row (None without
            ``freq_coord``).
        num_q: ``H * W`` (a run-time size when traced).
        num_k: ``Hk * Wk``.
    """

    ref: torch.Tensor
    to_grid: torch.Tensor
    q_f: torch.Tensor
    q_t: torch.Tensor
    fy: torch.Tensor | None
    num_q: int
    num_k: int


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
        num_heads: attention heads; ``dim`` must be a multiple of ``num_heads`` (of ``2 * num_heads`` with ``diff``).
        num_groups: offset groups; each group of ``num_heads / num_groups`` heads shares one set of sampling points.
        kv_stride: spacing of the reference grid in pixels, an int or ``(freq, time)``; a query sees
            ``ceil(H / s_f) * ceil(W / s_t)`` points per group.
        offset_range: largest offset, in units of the reference spacing (``tanh`` × this).
        offset_kernel: odd depthwise kernel of the offset network, int or ``(freq, time)``; default from the stride.
        freq_coord: feed the offset generator an absolute frequency coordinate (the audio offset generator).
        diff: differential attention ``(softmax(Q1 K1) - λ softmax(Q2 K2)) V`` with the head convention of
            :class:`models.layers.attention.DiffAttention` (``attn='diff'``): each of the ``num_heads`` heads has two
            softmax maps ``d = dim / (2 num_heads)`` wide and one value ``2 d`` wide, and λ comes from the same
            helper (:func:`models.layers.attention.diff_lambda`).
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
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if num_groups < 1 or num_heads % num_groups != 0:
            raise ValueError(f"num_heads={num_heads} must be divisible by num_groups={num_groups}")
        if offset_range < 0:
            raise ValueError(f"offset_range must be >= 0, got {offset_range}")
        self.dim = dim
        self.num_heads = num_heads
        self.num_groups = num_groups
        # softmax maps: one per head, or two per differential head; head_dim is the query/key width of one map
        self.num_maps = 2 * num_heads if diff else num_heads
        self.head_dim = diff_head_dim(dim, num_heads) if diff else dim // num_heads
        self.group_channels = dim // num_groups
        self.maps_per_group = self.num_maps // num_groups
        self.kv_stride = _pair(kv_stride, "kv_stride")
        if offset_kernel is None:
            offset_kernel = (default_offset_kernel(self.kv_stride[0]), default_offset_kernel(self.kv_stride[1]))
        kernel = _pair(offset_kernel, "offset_kernel")
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"offset_kernel must be odd so that sampling points sit on reference pixels, got {kernel}")
        self.offset_kernel = kernel
        self.offset_range = float(offset_range)
        # (time, freq) reference spacing in pixels; not saved with the weights (it follows from kv_stride)
        self.register_buffer("stride_tf", torch.tensor([float(self.kv_stride[1]), float(self.kv_stride[0])]),
                             persistent=False)
        self.freq_coord = freq_coord
        self.diff = diff
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
            self.rpb_f = nn.Sequential(nn.Linear(1, rpb_hidden), nn.GELU(), nn.Linear(rpb_hidden, self.maps_per_group))
            self.rpb_t = nn.Sequential(nn.Linear(1, rpb_hidden), nn.GELU(), nn.Linear(rpb_hidden, self.maps_per_group))

        if diff:
            # the Differential Transformer form of models.layers.attention.DiffAttention(mode='diff'): per-head RMS
            # norm over the 2 d wide value, output times (1 - lambda_init)
            self.lambda_init = float(lambda_init_fn(depth))
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = diff_lambda_vectors(self.head_dim)
            self.head_norm = HeadRMSNorm(2 * self.head_dim)

    # ------------------------------------------------------------------ size-dependent grids
    def size_grids(self, x: torch.Tensor) -> SizeGrids:
        """The tensors that depend only on the map's size and this layer's stride (see :class:`SizeGrids`).

        Built with ``arange`` / ``linspace`` from run-time sizes, so an exported graph computes them for each input;
        the blocks of a stage share one copy through the ``cache`` argument of :meth:`forward`.

        Args:
            x: a ``(B, C, H, W)`` map.
        """
        H, W = x.shape[2], x.shape[3]
        sf, st = self.kv_stride
        kw = {"device": x.device, "dtype": x.dtype}
        rows = torch.arange(H, **kw)  # (H,)
        cols = torch.arange(W, **kw)  # (W,)
        ref_f = torch.arange(0, H, sf, **kw).reshape(-1, 1)  # (Hk,) -> (Hk, 1): one point every sf rows
        ref_t = torch.arange(0, W, st, **kw).reshape(1, -1)  # (Wk,) -> (1, Wk)
        ref = torch.stack([ref_t + 0.0 * ref_f, ref_f + 0.0 * ref_t], dim=-1).unsqueeze(0)  # (1, Hk, Wk, 2)
        last = torch.cat([cols[-1:], rows[-1:]]).clamp(min=1.0)  # (2,) = (W - 1, H - 1), at least 1
        fy = None
        if self.freq_coord:  # (H,) -> (1, 1, H, 1) + (1, 1, 1, W) -> (1, 1, H, W)
            fy = torch.linspace(-1.0, 1.0, H, **kw).reshape(1, 1, -1, 1) + 0.0 * cols.reshape(1, 1, 1, -1)
        return SizeGrids(ref=ref, to_grid=2.0 / last, q_f=rows.reshape(1, -1, 1, 1), q_t=cols.reshape(1, -1, 1, 1),
                         fy=fy, num_q=H * W, num_k=ref.shape[1] * ref.shape[2])

    # ------------------------------------------------------------------ offsets and sampling points
    def _offsets_tf(self, q: torch.Tensor, grids: SizeGrids) -> torch.Tensor:
        """Offsets in units of the reference spacing, channels last in (time, freq) order: ``(B * G, Hk, Wk, 2)``.

        The offset network's LayerNorm, GELU and 1x1 conv run channels-last (the 1x1 conv as a linear map with
        its two output rows swapped), which is the layout ``grid_sample`` wants, so no transposes back are needed.
        """
        q_off = q
        if self.num_groups > 1:
            q_off = q.reshape(-1, self.group_channels, q.shape[2], q.shape[3])  # (B, C, H, W) -> (B*G, C/G, H, W)
        dw, norm, act, pw = self.conv_offset
        c = self.group_channels
        # the depthwise conv per channel: the query channels (a multiple of 8 runs fast) apart from the frequency
        # coordinate, whose plane is the same for every batch item, so it is convolved once at batch size 1
        y = F.conv2d(q_off, dw.weight[:c], dw.bias[:c], dw.stride, dw.padding, groups=c)  # (B*G, C/G, Hk, Wk)
        if self.freq_coord:
            y_f = F.conv2d(grids.fy, dw.weight[c:], dw.bias[c:], dw.stride, dw.padding)  # (1, 1, Hk, Wk)
            y = torch.cat([y, y[:, :1] * 0.0 + y_f], dim=1)  # (B*G, C/G + 1, Hk, Wk)
        y = y.permute(0, 2, 3, 1)  # (B*G, C/G + 1, Hk, Wk) -> (B*G, Hk, Wk, C/G + 1)
        y = act(F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        y = F.linear(y, pw.weight.flatten(1).flip(0))  # 1x1 conv, rows swapped: (B*G, Hk, Wk, 2), (time, freq)
        return torch.tanh(y) * self.offset_range

    @staticmethod
    def _bias_mlp(mlp: nn.Sequential, d: torch.Tensor) -> torch.Tensor:
        """One axis's bias MLP on displacements ``d`` ``(B*G, Q, Nk, 1)`` in pixels -> ``(B*G, m/G, Q, Nk)``.

        ``Linear(1, n) -> GELU -> Linear(n, m/G)`` on the log-spaced displacement; the log-spacing's ``1 / 3 ln 2``
        is folded into the first weight.
        """
        fc1, act, fc2 = mlp
        d = torch.sign(d) * torch.log1p(d.abs())  # sign(d) log2(1 + |d|) / 3, times 3 ln 2
        y = fc2(act(F.linear(d, fc1.weight * _LOG_SPACING, fc1.bias)))  # (B*G, Q, Nk, m/G)
        return y.permute(0, 3, 1, 2)  # (B*G, Q, Nk, m/G) -> (B*G, m/G, Q, Nk)

    def position_bias(self, pos: torch.Tensor, grids: SizeGrids) -> torch.Tensor:
        """Relative position bias at the (query - sampled point) displacements: frequency term + time term.

        Args:
            pos: ``(B * G, 1, Nk, 2)`` sampled points in pixels, (time, freq) last.
            grids: :meth:`size_grids` of the query map.

        Returns:
            ``(B, maps, H * W, Nk)``, one map per softmax map (two per head with ``diff``).
        """
        # displacements (1, H, 1, 1) - (B*G, 1, Nk, 1) -> (B*G, H, Nk, 1); bias -> (B*G, m/G, H, Nk); same along time
        b_f = self._bias_mlp(self.rpb_f, grids.q_f - pos[..., 1:])
        b_t = self._bias_mlp(self.rpb_t, grids.q_t - pos[..., :1])
        bias = b_f.unsqueeze(3) + b_t.unsqueeze(2)  # (B*G, m/G, H, 1, Nk) + (B*G, m/G, 1, W, Nk)
        return bias.reshape(-1, self.num_maps, grids.num_q, grids.num_k)  # (B*G, m/G, H, W, Nk) -> (B, m, H*W, Nk)

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
        return diff_lambda(self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2, self.lambda_init)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Attention of the queries over the sampled keys and values.

        Args:
            q: ``(B, C, *query_grid)`` queries, channels ordered head by head (e.g. ``(B, C, H, W)``).
            k: ``(B, C, *key_grid)`` keys, ``Nk`` positions in all.
            v: ``(B, C, *key_grid)`` values.
            bias: ``(B, maps, Nq, Nk)`` (one per softmax map) or None.

        Returns:
            The shape of ``q``.
        """
        B = q.shape[0]
        m, d = self.num_maps, self.head_dim
        q_in = q
        q = q.reshape(B, m, d, -1).transpose(-2, -1)  # (B, C, *grid) -> (B, m, Nq, d)
        k = k.reshape(B, m, d, -1).transpose(-2, -1)  # (B, C, *grid) -> (B, m, Nk, d)
        if not self.diff:
            v = v.reshape(B, m, d, -1).transpose(-2, -1)  # (B, C, *grid) -> (B, m, Nk, d)
            out = self._softmax_attention(q, k, v, bias)  # (B, m, Nq, d)
            return out.transpose(-2, -1).reshape_as(q_in)  # (B, m, d, Nq) -> (B, C, *query_grid)
        h = self.num_heads  # differential heads, two maps each (m = 2 h)
        q = q.reshape(B, h, 2, q.shape[2], d)  # (B, 2h, Nq, d) -> (B, h, 2, Nq, d)
        k = k.reshape(B, h, 2, k.shape[2], d)  # (B, 2h, Nk, d) -> (B, h, 2, Nk, d)
        v = v.reshape(B, h, 2 * d, -1).transpose(-2, -1)  # (B, C, *grid) -> (B, h, Nk, 2d)
        b1 = b2 = None
        if bias is not None:
            bias = bias.reshape(B, h, 2, bias.shape[2], bias.shape[3])  # (B, 2h, Nq, Nk) -> (B, h, 2, Nq, Nk)
            b1, b2 = bias[:, :, 0], bias[:, :, 1]
        lam = self.lambda_value().to(q.dtype)
        o1 = self._softmax_attention(q[:, :, 0], k[:, :, 0], v, b1)  # (B, h, Nq, 2d)
        o2 = self._softmax_attention(q[:, :, 1], k[:, :, 1], v, b2)
        out = self.head_norm(o1 - lam * o2) * (1.0 - self.lambda_init)
        return out.transpose(-2, -1).reshape_as(q_in)  # (B, h, 2d, Nq) -> (B, C, *query_grid)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """Deformable attention of every position of ``x`` ``(B, C, H, W)``; returns ``(B, C, H, W)``.

        Args:
            x: the (normalised) map.
            cache: a dict shared by the layers that run on maps of one size (the blocks of a stage); the
                size-dependent grids are computed by the first layer of each stride and reused by the others.
        """
        grids = None if cache is None else cache.get(("deformable_grids", self.kv_stride))
        if grids is None:
            grids = self.size_grids(x)
            if cache is not None:
                cache[("deformable_grids", self.kv_stride)] = grids
        q = self.proj_q(x)
        offsets = self._offsets_tf(q, grids)  # (B*G, Hk, Wk, 2), (time, freq) in reference spacings
        pos = (grids.ref + offsets * self.stride_tf).reshape(-1, 1, grids.num_k, 2)  # pixels: -> (B*G, 1, Nk, 2)
        grid = pos * grids.to_grid - 1.0  # grid_sample's [-1, 1] (align_corners=True), (time, freq)
        x_g = x
        if self.num_groups > 1:
            x_g = x.reshape(-1, self.group_channels, x.shape[2], x.shape[3])  # (B, C, H, W) -> (B*G, C/G, H, W)
        sampled = F.grid_sample(x_g, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        if self.num_groups > 1:
            sampled = sampled.reshape(-1, self.dim, 1, grids.num_k)  # (B*G, C/G, 1, Nk) -> (B, C, 1, Nk)
        k = self.proj_k(sampled)  # (B, C, 1, Nk)
        v = self.proj_v(sampled)
        bias = None if self.rpb_f is None else self.position_bias(pos, grids)
        out = self.attend(q, k, v, bias)  # (B, C, H, W)
        return self.proj_drop(self.proj_out(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.num_heads}, groups={self.num_groups}, kv_stride={self.kv_stride}, "
                f"offset_range={self.offset_range}, diff={self.diff}")
