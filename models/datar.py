"""DATAR: a pyramid transformer with deformable attention and a learnable input adaptor for audio tagging.

After Zhu, "DATAR: Deformable Audio Transformer for Audio Event Recognition" (ICASSP 2024, arXiv 2312.16228),
built on DAT (Xia et al., CVPR 2022) and DAT++ (Xia et al., 2023); see :mod:`models.layers.deformable`.

Layout: the input ``(B, T, F)`` normalised log-mel becomes a one-channel image ``(B, 1, F, T)`` (rows =
frequency, columns = time). Then:

1. input adaptor ``x + λ·conv(x)`` (λ learnable, starts at 0.01; ``input_adaptor=False`` for the ablation);
2. overlapped conv stem (two 3x3 stride-2 convs, DAT++): ``(B, C0, F/4, T/4)``;
3. four stages, a 3x3 stride-2 conv between them (``ceil`` sizes: no length has to divide anything); each block
   is ``x + DWConv3x3(x)`` (conditional position encoding), ``x + Attn(LN(x))``, ``x + MLP(LN(x))``, with
   deformable attention (key/value strides like DAT++'s ``[8, 4, 2, 1]``) or, for the ablation, plain global
   multi-head attention (``attn='standard'``); either can be differential (``diff=True``, the same heads as
   ``attn='diff'`` elsewhere: each head becomes a differential head of two softmax maps);
4. LayerNorm, mean over frequency → ``(B, T', D)`` with ``T' = ceil(T / 32)`` (320 ms per frame); a frame-wise
   head on every frame and a clip head on the mean over frames.

Any ``T`` in ``[t_min, t_max]`` runs without padding to a fixed size: nothing in the network depends on ``T``
except through run-time tensor sizes, so one ONNX graph serves every window length.

Example:
    >>> model = datar_test()
    >>> model(torch.randn(2, 100, 64)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.base import AEDModel
from models.layers.adapters import ADAPTER_KINDS, BottleneckAdapter, MapAdapter
from models.layers.attention import build_attention
from models.layers.deformable import DeformableAttention2d, LayerNorm2d, default_offset_kernel
from models.layers.mlp import DropPath, Mlp
from models.registry import register_model

__all__ = ["DATAR", "InputAdaptor", "DATARBlock", "DATARStage", "datar_tiny", "datar_small", "datar_nano",
           "datar_test"]

ATTN_KINDS = ("deformable", "standard")


class InputAdaptor(nn.Module):
    """Learnable input adaptor: ``x + λ·conv(x)`` on the spectrogram image ``(B, 1, F, T)``.

    DATAR adds a learned signal to the input so that the deformable attention's offset generator sees a
    richer map than the raw spectrogram. ``conv`` is 3x3 → GELU → 3x3 with ``hidden`` channels; λ is a
    learnable scalar that starts small, so a fresh adaptor barely changes the input.

    With ``out_kernel=1`` the last convolution is a 1x1 map without bias, so ``λ·conv`` is linear and pointwise in
    the hidden map ``h``. A convolution that follows can then take ``h`` directly (:meth:`fold_into`): on ONNX
    Runtime's CPU kernels a convolution with one output channel over the full-resolution spectrogram costs more
    than the rest of the adaptor (``benchmarks/results/adaptor_cost.md``).

    Args:
        hidden: channels of the inner convolution.
        init_scale: starting value of λ.
        act: the inner activation, ``"gelu"`` or ``"relu"`` (ONNX Runtime fuses a ReLU into the convolution; on a
            full-resolution spectrogram GELU costs more than both convolutions).
        out_kernel: kernel of the last convolution, 3 (DATAR's form) or 1 (linear in ``h``, foldable).

    Example:
        >>> InputAdaptor()(torch.zeros(1, 1, 64, 100)).shape
        torch.Size([1, 1, 64, 100])
    """

    def __init__(self, hidden: int = 8, init_scale: float = 0.01, act: str = "gelu", out_kernel: int = 3) -> None:
        super().__init__()
        acts = {"gelu": nn.GELU, "relu": nn.ReLU}
        if act not in acts:
            raise ValueError(f"input adaptor activation must be one of {sorted(acts)}, got {act!r}")
        if out_kernel not in (1, 3):
            raise ValueError(f"input adaptor out_kernel must be 1 or 3, got {out_kernel!r}")
        out = (nn.Conv2d(hidden, 1, 3, padding=1) if out_kernel == 3 else nn.Conv2d(hidden, 1, 1, bias=False))
        self.conv = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), acts[act](), out)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.foldable = out_kernel == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + λ·conv(x)`` for ``x`` ``(B, 1, F, T)``."""
        return x + self.scale * self.conv(x)

    def fold_into(self, conv: nn.Conv2d, x: torch.Tensor, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
        """``bn(conv(self(x)))`` computed as ``conv(x) + conv'(h)``, without forming the adapted image.

        Exact for the foldable form: ``λ·W_out h`` is pointwise and linear in ``h`` (zero where ``h`` is zero, so also
        in ``conv``'s zero padding), hence ``conv(λ·W_out h) = conv'(h)`` with ``W'[o, c] = λ·W_out[c]·W[o]``.
        When ``bn`` is in eval mode it is folded into both convolutions as well. The folded weights depend on weights
        only, so an exported graph computes them once, as constants.

        Args:
            conv: a convolution over one input channel, without bias (the stem's first).
            x: the spectrogram image ``(B, 1, F, T)``.
            bn: the BatchNorm after ``conv``, or None.
        """
        if not self.foldable:
            raise ValueError("only an input adaptor with out_kernel=1 folds into the next convolution")
        if conv.in_channels != 1 or conv.groups != 1 or conv.bias is not None:
            raise ValueError(f"fold_into takes a convolution over one input channel without bias, got {conv}")
        h = self.conv[1](self.conv[0](x))  # (B, 1, F, T) -> (B, hidden, F, T)
        w, bias = conv.weight, None  # (C0, 1, k, k)
        if bn is not None and not bn.training:  # eval BatchNorm: y * s + (beta - mean * s) per channel
            s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            w, bias = w * s.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * s
        w_h = w * (self.scale * self.conv[2].weight)  # (C0, 1, k, k) * (1, hidden, 1, 1) -> (C0, hidden, k, k)
        y = (F.conv2d(x, w, bias, conv.stride, conv.padding, conv.dilation)
             + F.conv2d(h, w_h, None, conv.stride, conv.padding, conv.dilation))
        return bn(y) if bn is not None and bn.training else y


class DATARBlock(nn.Module):
    """One transformer block on a ``(B, C, H, W)`` map: position conv, attention, MLP.

    Args:
        dim: channels.
        num_heads: attention heads.
        attn: ``'deformable'`` or ``'standard'`` (global multi-head attention over all H*W tokens).
        diff: differential attention; each head then has two softmax maps half as wide, for either ``attn``
            (the convention of :class:`models.layers.attention.DiffAttention`).
        depth: global block index (differential attention's λ_init).
        kv_stride: key/value sampling stride of deformable attention.
        num_groups: offset groups of deformable attention.
        offset_range: offset range factor (units of the reference spacing).
        offset_kernel: odd depthwise kernel of the offset network.
        mlp_ratio: MLP hidden width over ``dim``.
        drop_path: stochastic depth of both residual branches.
        fused_attn: fused SDPA kernel (export uses the plain path).
        rpb_hidden: hidden width of the continuous position bias MLP.
        adapter: ``None``, ``'aat'`` or ``'loaa'`` (zero-initialised, so a fresh adapter changes nothing).
            ``'aat'``: a spatial adapter with an inner skip after the attention (``y + S(y)``) and a bottleneck
            adapter in parallel with the MLP; ``'loaa'``: a ``1 x 3`` (time) or ``3 x 1`` (frequency) convolution
            adapter in parallel with the MLP.
        adapter_ratio: bottleneck width over ``dim``.
        adapter_scale: scale of the adapter in parallel with the MLP.
        loaa_axis: ``'time'`` or ``'freq'`` for ``adapter='loaa'``.
        spatial_adapter: with ``adapter='aat'``, include the spatial adapter (off for its ablation).

    Example:
        >>> DATARBlock(32, 2, kv_stride=2)(torch.zeros(1, 32, 8, 13)).shape
        torch.Size([1, 32, 8, 13])
    """

    def __init__(self, dim: int, num_heads: int, attn: str = "deformable", diff: bool = False, depth: int = 0,
                 kv_stride: int = 1, num_groups: int = 1, offset_range: float = 2.0, offset_kernel: int | None = None,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, fused_attn: bool = False,
                 rpb_hidden: int = 16, adapter: str | None = None, adapter_ratio: float = 0.25,
                 adapter_scale: float = 0.5, loaa_axis: str = "time", spatial_adapter: bool = True) -> None:
        super().__init__()
        if adapter not in ADAPTER_KINDS:
            raise ValueError(f"unknown adapter {adapter!r}; accepted: {', '.join(map(repr, ADAPTER_KINDS))}")
        if attn not in ATTN_KINDS:
            raise ValueError(f"unknown attention {attn!r}; accepted: {', '.join(ATTN_KINDS)}")
        self.attn_kind = attn
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = LayerNorm2d(dim)
        if attn == "deformable":
            self.attn = DeformableAttention2d(dim, num_heads, num_groups=num_groups, kv_stride=kv_stride,
                                              offset_range=offset_range, offset_kernel=offset_kernel, diff=diff,
                                              depth=depth, rpb_hidden=rpb_hidden, fused_attn=fused_attn)
        else:
            self.attn = build_attention("diff" if diff else "mha", dim, num_heads, depth=depth, fused_attn=fused_attn)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adapter, self.adapter_scale = adapter, adapter_scale
        self.spatial_adapter: nn.Module | None = None
        self.mlp_adapter: nn.Module | None = None
        if adapter == "aat":
            if spatial_adapter:
                self.spatial_adapter = MapAdapter(dim, kind="mlp", ratio=adapter_ratio)
            self.mlp_adapter = BottleneckAdapter(dim, adapter_ratio)
        elif adapter == "loaa":
            self.mlp_adapter = MapAdapter(dim, kind=loaa_axis, ratio=adapter_ratio)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """Apply the block to ``x`` ``(B, C, H, W)``.

        Args:
            x: the map.
            cache: shared by the blocks of a stage (maps of one size), so that deformable attention's size-dependent
                grids are computed once per stage; see :meth:`DeformableAttention2d.forward`.
        """
        x = x + self.pos(x)
        y = self.norm1(x)
        if self.attn_kind == "deformable":
            y = self.attn(y, cache)
        else:
            y = self.attn(y.flatten(2).transpose(1, 2))  # (B, C, H, W) -> (B, H*W, C)
            y = y.transpose(1, 2).reshape_as(x)  # (B, H*W, C) -> (B, C, H, W)
        if self.spatial_adapter is not None:
            y = y + self.spatial_adapter(y)
        x = x + self.drop_path(y)
        t = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        n = self.norm2(t)
        h = self.mlp(n)
        if isinstance(self.mlp_adapter, MapAdapter):
            h = h + self.adapter_scale * self.mlp_adapter(n.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        elif self.mlp_adapter is not None:
            h = h + self.adapter_scale * self.mlp_adapter(n)
        t = t + self.drop_path(h)
        return t.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def loaa_axes_for(n: int, axes: Sequence[str] | None) -> list[str]:
    """LoAA axis per block: as given (one per block), or time in the first half and frequency in the second."""
    if axes is None:
        return ["time" if i < (n + 1) // 2 else "freq" for i in range(n)]
    axes = list(axes)
    if len(axes) != n:
        raise ValueError(f"loaa_axes must give one axis per block ({n}), got {len(axes)}")
    return axes


class DATARStage(nn.Sequential):
    """The blocks of one stage, run in order with one shared cache (all of them see maps of one size).

    An ``nn.Sequential``, so parameter names are ``<stage>.<block>.<...>`` as before.

    Example:
        >>> DATARStage(DATARBlock(32, 2, kv_stride=2), DATARBlock(32, 2, kv_stride=2))(torch.zeros(1, 32, 8, 13)).shape
        torch.Size([1, 32, 8, 13])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every block to ``x`` ``(B, C, H, W)``."""
        cache: dict = {}
        for block in self:
            x = block(x, cache)
        return x


class DATAR(AEDModel):
    """Deformable audio transformer: input adaptor, conv stem, four deformable-attention stages, two heads.

    Args:
        num_classes: output classes ``C``.
        num_mel_bins: mel bins ``F`` of the input.
        t_min: shortest accepted window in frames.
        t_max: longest accepted window in frames.
        dims: channels of the four stages.
        depths: blocks per stage.
        num_heads: attention heads per stage (differential heads with ``diff``).
        num_groups: offset groups per stage.
        kv_strides: key/value sampling stride per stage (DAT++: 8, 4, 2, 1).
        offset_range: offset range factor per stage, in units of the reference spacing.
        offset_kernels: odd depthwise kernels of the offset networks; default 9, 7, 5, 3 style from the strides.
        mlp_ratio: MLP hidden width over the stage width.
        attn: ``'deformable'`` or ``'standard'`` (plain global attention, for the ablation).
        diff: differential attention in every block.
        input_adaptor: use the learnable input adaptor (off for the ablation).
        adaptor_hidden: channels of the adaptor's inner conv.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        fused_attn: fused SDPA kernels (the plain path exports to plain ONNX ops).
        rpb_hidden: hidden width of the continuous relative position bias.
        adapter: ``None``, ``'aat'`` or ``'loaa'`` in every block (see :class:`DATARBlock`); for PEFT.
        adapter_ratio: adapter bottleneck width over the stage width.
        loaa_axes: LoAA axis per block (``'time'``/``'freq'``); default: time in the first half, frequency after.
        spatial_adapter: AAT's spatial adapter after each attention (off for its ablation).
        output_activation: ``'sigmoid'`` (multi-label) or ``'softmax'`` (single-label).

    Example:
        >>> model = DATAR(num_classes=3, dims=(16, 32, 32, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2),
        ...               num_groups=(1, 1, 1, 1))
        >>> clip, frames = model.forward_logits(torch.randn(1, 100, 64))
        >>> clip.shape, frames.shape
        (torch.Size([1, 3]), torch.Size([1, 4, 3]))
    """

    def __init__(self, num_classes: int = 527, num_mel_bins: int = 64, t_min: int = 50, t_max: int = 1000,
                 dims: Sequence[int] = (48, 96, 192, 384), depths: Sequence[int] = (1, 2, 4, 1),
                 num_heads: Sequence[int] = (2, 4, 8, 16), num_groups: Sequence[int] = (1, 2, 4, 8),
                 kv_strides: Sequence[int] = (8, 4, 2, 1), offset_range: Sequence[float] = (2.0, 2.0, 2.0, 2.0),
                 offset_kernels: Sequence[int] | None = None, mlp_ratio: float = 4.0, attn: str = "deformable",
                 diff: bool = False, input_adaptor: bool = True, adaptor_hidden: int = 8,
                 drop_path_rate: float = 0.0, fused_attn: bool = False, rpb_hidden: int = 16,
                 adapter: str | None = None, adapter_ratio: float = 0.25, loaa_axes: Sequence[str] | None = None,
                 spatial_adapter: bool = True, output_activation: str = "sigmoid") -> None:
        super().__init__()
        stage_args = {"dims": dims, "depths": depths, "num_heads": num_heads, "num_groups": num_groups,
                      "kv_strides": kv_strides, "offset_range": offset_range}
        if offset_kernels is not None:
            stage_args["offset_kernels"] = offset_kernels
        for key, val in stage_args.items():
            if len(val) != 4:
                raise ValueError(f"{key} must give one value for each of the 4 stages, got {tuple(val)}")
        if attn not in ATTN_KINDS:
            raise ValueError(f"unknown attention {attn!r}; accepted: {', '.join(ATTN_KINDS)}")
        if output_activation not in ("sigmoid", "softmax"):
            raise ValueError(f"output_activation must be 'sigmoid' or 'softmax', got {output_activation!r}")
        if not (1 <= t_min <= t_max):
            raise ValueError(f"need 1 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
        self.num_classes = num_classes
        self.num_mel_bins = num_mel_bins
        self.t_min = t_min
        self.t_max = t_max
        self.output_activation = output_activation
        self.attn = attn
        self.diff = diff
        self.num_features = dims[-1]
        if offset_kernels is None:
            offset_kernels = [default_offset_kernel(s) for s in kv_strides]

        self.input_adaptor = InputAdaptor(adaptor_hidden) if input_adaptor else nn.Identity()
        self.stem = nn.Sequential(
            nn.Conv2d(1, dims[0] // 2, 3, stride=2, padding=1), LayerNorm2d(dims[0] // 2), nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1), LayerNorm2d(dims[0]),
        )
        rates = torch.linspace(0.0, drop_path_rate, sum(depths)).tolist()
        axes = loaa_axes_for(sum(depths), loaa_axes)
        self.adapter = adapter
        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        block_idx = 0
        for i in range(4):
            self.downsamples.append(nn.Identity() if i == 0 else nn.Sequential(
                nn.Conv2d(dims[i - 1], dims[i], 3, stride=2, padding=1), LayerNorm2d(dims[i])))
            blocks = []
            for _ in range(depths[i]):
                blocks.append(DATARBlock(dims[i], num_heads[i], attn=attn, diff=diff, depth=block_idx,
                                         kv_stride=kv_strides[i], num_groups=num_groups[i],
                                         offset_range=offset_range[i], offset_kernel=offset_kernels[i],
                                         mlp_ratio=mlp_ratio, drop_path=rates[block_idx], fused_attn=fused_attn,
                                         rpb_hidden=rpb_hidden, adapter=adapter, adapter_ratio=adapter_ratio,
                                         loaa_axis=axes[block_idx], spatial_adapter=spatial_adapter))
                block_idx += 1
            self.stages.append(DATARStage(*blocks))
        self.norm = LayerNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.frame_head = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, D, F/32, T')`` of input ``x`` ``(B, T, F)`` (checked)."""
        self.check_input(x)
        x = x.transpose(1, 2).unsqueeze(1)  # (B, T, F) -> (B, 1, F, T)
        x = self.stem(self.input_adaptor(x))  # (B, 1, F, T) -> (B, C0, F/4, T/4)
        for down, stage in zip(self.downsamples, self.stages):
            x = stage(down(x))
        return self.norm(x)

    def forward_head(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip logits ``(B, C)`` and frame logits ``(B, T', C)`` from a feature map ``(B, D, F', T')``."""
        frames = feats.mean(dim=2).transpose(1, 2)  # (B, D, F', T') -> (B, T', D)
        return self.head(frames.mean(dim=1)), self.frame_head(frames)

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(clip_logits (B, C), frame_logits (B, T', C))`` with ``T' = ceil(T / 32)``."""
        return self.forward_head(self.forward_features(x))

    #: the fine-tuning methods of :func:`models.peft.prepare` this family takes
    peft_methods = ("head", "aat", "loaa", "full")

    def get_classifier(self) -> list[nn.Module]:
        """The heads (what ``--peft head`` trains)."""
        return [self.head, self.frame_head]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace both heads with fresh ones for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
        self.frame_head = nn.Linear(self.num_features, num_classes)

    def output_frames(self, t: int) -> int:
        """Frames ``T'`` of the frame-wise head for a window of ``t`` frames (five halvings, rounding up)."""
        for _ in range(5):
            t = (t + 1) // 2
        return t


def _build(defaults: dict, kwargs: dict) -> DATAR:
    return DATAR(**{**defaults, **kwargs})


@register_model
def datar_tiny(**kwargs) -> DATAR:
    """DATAR-tiny: dims 48-96-192-384, depths 1-2-4-1, strides 8-4-2-1: 5.1 M parameters, 109 MMACs on (1, 100, 64)."""
    return _build(dict(dims=(48, 96, 192, 384), depths=(1, 2, 4, 1), num_heads=(2, 4, 8, 16),
                       num_groups=(1, 2, 4, 8), kv_strides=(8, 4, 2, 1), offset_kernels=(9, 7, 5, 3)), kwargs)


@register_model
def datar_small(**kwargs) -> DATAR:
    """DATAR-small: dims 64-128-256-512, depths 2-2-6-2 (DAT-T's layout), strides 8-4-2-1: 13.7 M parameters."""
    return _build(dict(dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 16),
                       num_groups=(1, 2, 4, 8), kv_strides=(8, 4, 2, 1), offset_kernels=(9, 7, 5, 3)), kwargs)


@register_model
def datar_nano(**kwargs) -> DATAR:
    """DATAR-nano for one CPU thread: dims 32-64-96-192, one block per stage, one offset group, MLP ratio 3.

    1.0 M parameters, 20.5 MMACs on ``(1, 100, 64)`` (datar_tiny: 5.1 M, 109 MMACs); see benchmarks/results/datar.md.
    """
    return _build(dict(dims=(32, 64, 96, 192), depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 6), num_groups=(1, 1, 1, 1),
                       kv_strides=(8, 4, 2, 1), offset_kernels=(9, 7, 5, 3), mlp_ratio=3.0, adaptor_hidden=4), kwargs)


@register_model
def datar_test(**kwargs) -> DATAR:
    """A tiny DATAR for tests: dims 16-32-32-64, one block per stage, 10 classes."""
    return _build(dict(num_classes=10, dims=(16, 32, 32, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 4),
                       num_groups=(1, 1, 1, 2), kv_strides=(8, 4, 2, 1), mlp_ratio=2.0, rpb_hidden=8,
                       adaptor_hidden=4), kwargs)
