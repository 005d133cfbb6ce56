"""MobileNetV3 for audio in the EfficientAT layout, and DATAR-MN: deformable attention on its pretrained stem.

The MobileNetV3-Large block table (Howard et al., "Searching for MobileNetV3", ICCV 2019) scaled by a width
multiplier, as EfficientAT uses it for AudioSet tagging (Schmid, Koutini, Widmer, "Efficient Large-Scale Audio
Tagging via Transformer-to-CNN Knowledge Distillation", ICASSP 2023, arXiv 2211.04772). Parameter names and
shapes follow EfficientAT's state dicts (``features.N.block.M...``, ``classifier.2`` / ``classifier.5``), so that
:func:`models.load_efficientat_checkpoint` loads its ``mn04_as`` checkpoint strictly. The code is our own.

Layout: the input ``(B, T, F)`` normalised log-mel becomes ``(B, 1, F, T)``; ``features.0`` is a 3x3 stride-2
conv, ``features.1..15`` the fifteen inverted-residual blocks (expand 1x1 -> depthwise kxk -> channel
squeeze-excitation where the table has it -> project 1x1; ReLU early, Hardswish late; residual where the shape
allows), ``features.16`` a 1x1 conv to ``6 x`` the last width. The clip head is EfficientAT's MLP: global
average pool -> Linear -> Hardswish -> Dropout -> Linear. The frame head applies the same MLP to every time
column of the final map (mean over frequency): ``T' = ceil(T / 32)`` frames of 320 ms.

:class:`DATARMN` (``datar_mn04``) keeps DATAR's learnable input adaptor, runs the pretrained blocks up to a cut,
projects to a neck width and adds deformable-attention blocks (:class:`models.datar.DATARBlock`) before a clip
head and a frame head.

Example:
    >>> model = mn_test()
    >>> clip, frames = model.forward_logits(torch.zeros(2, 100, 32))
    >>> clip.shape, frames.shape
    (torch.Size([2, 10]), torch.Size([2, 4, 10]))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from models.base import AEDModel
from models.registry import register_model
from realtime.config import efficientat_frontend

__all__ = ["MobileNetAudio", "DATARMN", "InvertedResidual", "SqueezeExcite", "block_table", "make_divisible",
           "mn04", "mn10", "mn_test", "datar_mn04", "datar_mn_test"]

_BN_EPS = 1e-3  # EfficientAT's BatchNorm epsilon (its checkpoints' running statistics assume it)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10 % below ``v`` (MobileNet rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block: channels after the width multiplier, kernel, SE, activation, stride."""

    cin: int
    kernel: int
    expanded: int
    cout: int
    se: bool
    hardswish: bool
    stride: tuple[int, int]      # (frequency, time)


# MobileNetV3-Large, Table 2 of the paper: (in, kernel, expanded, out, SE, activation, stride)
_LARGE = [
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
]


def block_table(width_mult: float, time_strides: Sequence[int] = (2, 2, 2, 2)) -> list[BlockSpec]:
    """The fifteen blocks at ``width_mult``; ``time_strides`` sets the time stride of the four downsampling blocks.

    A time stride of 1 keeps more frames (a finer frame head) with the same weights: a depthwise kernel does
    not depend on its stride.
    """
    if len(time_strides) != 4 or any(s not in (1, 2) for s in time_strides):
        raise ValueError(f"time_strides must be four values, each 1 or 2, got {tuple(time_strides)}")
    out, k = [], 0
    for cin, kern, exp, cout, se, act, s in _LARGE:
        stride = (1, 1)
        if s == 2:
            stride = (2, int(time_strides[k]))
            k += 1
        out.append(BlockSpec(make_divisible(cin * width_mult), kern, make_divisible(exp * width_mult),
                             make_divisible(cout * width_mult), se, act == "HS", stride))
    return out


def _conv_bn(cin: int, cout: int, kernel: int, stride: int | tuple[int, int] = 1, groups: int = 1,
             act: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> optional activation, named ``0``, ``1``, ``2`` like EfficientAT's."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=0.01)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _SEBranch(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))                                   # (B, C, F, T) -> (B, C)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s[:, :, None, None]                           # (B, C) -> (B, C, 1, 1)


class SqueezeExcite(nn.Module):
    """Channel squeeze-excitation (pool over frequency and time, ReLU bottleneck, sigmoid gate).

    The branch sits in ``conc_se_layers.0`` so that EfficientAT's parameter names (its "concurrent SE" with the
    single channel branch, ``se_dims='c'``) load unchanged.

    Example:
        >>> SqueezeExcite(32, 8)(torch.ones(1, 32, 4, 5)).shape
        torch.Size([1, 32, 4, 5])
    """

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_SEBranch(channels, squeeze)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: expand 1x1 -> depthwise kxk -> SE -> project 1x1, with a skip when shapes match.

    Example:
        >>> spec = block_table(0.4)[3]
        >>> InvertedResidual(spec)(torch.zeros(1, spec.cin, 32, 25)).shape
        torch.Size([1, 16, 16, 13])
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        act = nn.Hardswish if spec.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if spec.expanded != spec.cin:
            layers.append(_conv_bn(spec.cin, spec.expanded, 1, act=act))
        layers.append(_conv_bn(spec.expanded, spec.expanded, spec.kernel, spec.stride, groups=spec.expanded, act=act))
        if spec.se:
            layers.append(SqueezeExcite(spec.expanded, make_divisible(spec.expanded // 4)))
        layers.append(_conv_bn(spec.expanded, spec.cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = spec.stride == (1, 1) and spec.cin == spec.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


HEAD_BIAS_INIT = -4.0  # sigmoid(-4) = 0.018: a fresh detection head starts near "nothing here"


def _check_common(num_mel_bins: int, t_min: int, t_max: int, output_activation: str) -> None:
    if output_activation not in ("sigmoid", "softmax"):
        raise ValueError(f"output_activation must be 'sigmoid' or 'softmax', got {output_activation!r}")
    if not (1 <= t_min <= t_max):
        raise ValueError(f"need 1 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    if num_mel_bins < 32:
        raise ValueError(f"num_mel_bins must be at least 32 (five stride-2 stages), got {num_mel_bins}")


def _stem(table: list[BlockSpec], upto: int) -> list[nn.Module]:
    return [_conv_bn(1, table[0].cin, 3, 2, act=nn.Hardswish)] + [InvertedResidual(s) for s in table[:upto]]


def _stem_adapters(table: list[BlockSpec], upto: int, count: int, ratio: float) -> nn.ModuleDict:
    """LoAA adapters in parallel with the last ``count`` residual blocks among the first ``upto``: time along the
    earlier half, frequency along the later, keyed by the block's index in ``features``."""
    from models.layers.adapters import MapAdapter

    residual = [i + 1 for i, b in enumerate(table[:upto]) if b.stride == (1, 1) and b.cin == b.cout]
    chosen = residual[-count:] if count > 0 else []
    half = (len(chosen) + 1) // 2
    return nn.ModuleDict({str(i): MapAdapter(table[i - 1].cin, kind="time" if k < half else "freq", ratio=ratio)
                          for k, i in enumerate(chosen)})


def _run_stem(features: nn.Sequential, adapters: nn.ModuleDict, scale: float, x: torch.Tensor,
              start: int = 0) -> torch.Tensor:
    """``features[start:]`` in order, each adapter's output (scaled) added to its block's:
    ``block(x) + s * adapter(x)``."""
    if not len(adapters):
        return features[start:](x) if start else features(x)
    for i in range(start, len(features)):
        layer = features[i]
        a = adapters[str(i)] if str(i) in adapters else None
        x = layer(x) + scale * a(x) if a is not None else layer(x)
    return x


def _check_adapter(family: str, adapter: str | None, accepted: tuple) -> None:
    if adapter not in accepted:
        raise ValueError(f"{family} takes adapter {' or '.join(map(repr, accepted))}, got {adapter!r}")


class MobileNetAudio(AEDModel):
    """EfficientAT-style MobileNetV3 audio tagger with a clip head and a frame head (sharing the MLP).

    Args:
        num_classes: outputs ``C`` (527 for AudioSet).
        num_mel_bins: mel bins ``F`` (128 for EfficientAT checkpoints).
        width_mult: channel multiplier (0.4 for ``mn04``).
        t_min: shortest accepted window in frames.
        t_max: longest accepted window in frames.
        time_strides: time stride of the four downsampling blocks (see :func:`block_table`).
        head_hidden: hidden width of the MLP head before the width multiplier (1280, MobileNetV3's last channel).
        dropout: dropout inside the MLP head.
        output_activation: ``'sigmoid'`` (multi-label) or ``'softmax'``.
        adapter: ``None`` or ``'loaa'``: LoAA convolution adapters in parallel with the last ``stem_adapters``
            residual blocks (for PEFT; a CNN has no attention for AAT's adapters).
        adapter_ratio: adapter bottleneck width over the block's width.
        adapter_scale: scale of the adapters' outputs.
        stem_adapters: how many residual blocks get an adapter.
    """

    #: the fine-tuning methods of :func:`models.peft.prepare` this family takes
    peft_methods = ("head", "loaa", "full")

    def __init__(self, num_classes: int = 527, num_mel_bins: int = 128, width_mult: float = 0.4, t_min: int = 50,
                 t_max: int = 1000, time_strides: Sequence[int] = (2, 2, 2, 2), head_hidden: int = 1280,
                 dropout: float = 0.2, output_activation: str = "sigmoid", adapter: str | None = None,
                 adapter_ratio: float = 0.25, adapter_scale: float = 0.5, stem_adapters: int = 4) -> None:
        super().__init__()
        _check_common(num_mel_bins, t_min, t_max, output_activation)
        _check_adapter("a MobileNet", adapter, (None, "loaa"))
        if not (0.05 <= width_mult <= 4.0):
            raise ValueError(f"width_mult must be in [0.05, 4], got {width_mult}")
        self.num_classes, self.num_mel_bins = num_classes, num_mel_bins
        self.t_min, self.t_max, self.output_activation = t_min, t_max, output_activation
        self.width_mult = width_mult
        self.time_strides = tuple(int(s) for s in time_strides)
        table = block_table(width_mult, self.time_strides)
        last = 6 * table[-1].cout
        self.features = nn.Sequential(*_stem(table, len(table)), _conv_bn(table[-1].cout, last, 1, act=nn.Hardswish))
        self.num_features = last
        self.head_hidden = make_divisible(head_hidden * width_mult)
        self.dropout = dropout
        self.classifier = self._mlp_head(num_classes)
        self.frontend = efficientat_frontend(16000, num_mel_bins)
        _init_weights(self)
        self.adapter, self.adapter_scale = adapter, adapter_scale   # after the init: adapters start at zero
        self.stem_adapters = _stem_adapters(table, len(table), stem_adapters if adapter else 0, adapter_ratio)

    def _mlp_head(self, num_classes: int) -> nn.Sequential:
        # indices 2 and 5 are the Linear layers, as in EfficientAT's state dicts
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(self.num_features, self.head_hidden),
                             nn.Hardswish(), nn.Dropout(self.dropout), nn.Linear(self.head_hidden, self.num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``(B, D, F/32, T')`` of input ``x`` ``(B, T, F)`` (checked)."""
        self.check_input(x)
        x = x.transpose(1, 2).unsqueeze(1)                       # (B, T, F) -> (B, 1, F, T)
        return _run_stem(self.features, self.stem_adapters, self.adapter_scale, x)

    def _mlp(self, z: torch.Tensor) -> torch.Tensor:
        for layer in list(self.classifier)[2:]:
            z = layer(z)
        return z

    def forward_head(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip logits ``(B, C)`` (pool -> MLP) and frame logits ``(B, T', C)`` (the MLP on every time column)."""
        frames = feats.mean(dim=2).transpose(1, 2)               # (B, D, F', T') -> (B, T', D)
        pooled = feats.mean(dim=(2, 3)).unsqueeze(1)             # (B, D, F', T') -> (B, 1, D)
        # one MLP call over [pooled; frames] so that an exported graph holds the head's weights once
        out = self._mlp(torch.cat([pooled, frames], dim=1))      # (B, 1 + T', C)
        return out[:, 0], out[:, 1:]

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``(B, D)`` embedding (384-d for ``mn04``)."""
        return self.forward_features(x).mean(dim=(2, 3))

    def get_classifier(self) -> list[nn.Module]:
        """The MLP head (what ``--peft head`` trains)."""
        return [self.classifier]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh last Linear for ``num_classes`` (the hidden layer of the MLP head is kept)."""
        self.num_classes = num_classes
        self.classifier[5] = nn.Linear(self.head_hidden, num_classes)
        nn.init.normal_(self.classifier[5].weight, 0.0, 0.01)
        nn.init.constant_(self.classifier[5].bias, HEAD_BIAS_INIT if self.output_activation == "sigmoid" else 0.0)

    def output_frames(self, t: int) -> int:
        """Frames ``T'`` of the frame head for a window of ``t`` frames."""
        for s in (2, *self.time_strides):
            t = (t - 1) // s + 1
        return t


class DATARMN(AEDModel):
    """DATAR-MN: input adaptor -> pretrained MobileNet blocks up to ``cut`` -> neck -> deformable blocks -> heads.

    Args:
        num_classes: outputs ``C``.
        num_mel_bins: mel bins ``F`` (128 for the EfficientAT stem).
        width_mult: stem width multiplier (0.4 to load ``mn04`` weights).
        cut: how many of the fifteen inverted-residual blocks the stem keeps (12: stride 16; 15: stride 32).
        time_strides: time strides of the stem's downsampling blocks (see :func:`block_table`).
        neck_dim: channels of the deformable stage (a 1x1 conv + LayerNorm maps the stem to it).
        depth: deformable-attention blocks.
        num_heads: attention heads.
        kv_stride: key/value sampling stride of the deformable attention.
        offset_range: offset range factor.
        diff: differential attention.
        mlp_ratio: MLP width of the blocks over ``neck_dim``.
        input_adaptor: DATAR's ``x + λ·conv(x)`` (off for the ablation).
        adaptor_act: the adaptor's inner activation (``"gelu"`` or ``"relu"``, see :class:`models.datar.InputAdaptor`).
        adaptor_out_kernel: kernel of the adaptor's last convolution: 3 (DATAR's form) or 1, which the forward pass
            folds into the stem's first convolution (the same function, without the one-channel full-resolution
            convolution that dominates the adaptor's cost on ONNX Runtime).
        adaptor_hidden: channels of the adaptor's inner map.
        adapter: ``None``, ``'aat'`` (a spatial adapter after each deformable attention and a bottleneck adapter in
            parallel with each block's MLP) or ``'loaa'`` (``1 x 3`` / ``3 x 1`` convolution adapters in parallel
            with the last ``stem_adapters`` residual blocks of the pretrained stem and with each block's MLP); for
            PEFT, zero-initialised.
        adapter_ratio: adapter bottleneck width over the width it adapts.
        adapter_scale: scale of the adapters in parallel with a block.
        stem_adapters: how many residual stem blocks get a LoAA adapter.
        spatial_adapter: AAT's spatial adapter (off for its ablation).
        drop_path_rate: stochastic depth over the blocks.
        dropout: dropout before the heads.
        t_min: shortest accepted window in frames.
        t_max: longest accepted window in frames.
        output_activation: ``'sigmoid'`` or ``'softmax'``.
    """

    def __init__(self, num_classes: int = 50, num_mel_bins: int = 128, width_mult: float = 0.4, cut: int = 12,
                 time_strides: Sequence[int] = (2, 2, 2, 2), neck_dim: int = 96, depth: int = 1, num_heads: int = 4,
                 kv_stride: int = 1, offset_range: float = 2.0, diff: bool = False, mlp_ratio: float = 2.0,
                 input_adaptor: bool = True, adaptor_act: str = "gelu", adaptor_out_kernel: int = 3,
                 adaptor_hidden: int = 4, drop_path_rate: float = 0.0, dropout: float = 0.1, t_min: int = 50,
                 t_max: int = 1000, output_activation: str = "sigmoid",
                 adapter: str | None = None, adapter_ratio: float = 0.25, adapter_scale: float = 0.5,
                 stem_adapters: int = 4, spatial_adapter: bool = True) -> None:
        super().__init__()
        _check_adapter("DATAR-MN", adapter, (None, "aat", "loaa"))
        from models.datar import DATARBlock, InputAdaptor
        from models.layers.deformable import LayerNorm2d

        _check_common(num_mel_bins, t_min, t_max, output_activation)
        if not (4 <= cut <= 15):
            raise ValueError(f"cut must keep 4..15 of the 15 MobileNet blocks, got {cut}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.num_classes, self.num_mel_bins = num_classes, num_mel_bins
        self.t_min, self.t_max, self.output_activation = t_min, t_max, output_activation
        self.cut, self.width_mult = cut, width_mult
        self.time_strides = tuple(int(s) for s in time_strides)
        table = block_table(width_mult, self.time_strides)
        self.input_adaptor = (InputAdaptor(adaptor_hidden, act=adaptor_act, out_kernel=adaptor_out_kernel)
                              if input_adaptor else nn.Identity())
        self.features = nn.Sequential(*_stem(table, cut))
        self.adapter, self.adapter_scale = adapter, adapter_scale
        self.stem_adapters = _stem_adapters(table, cut, stem_adapters if adapter == "loaa" else 0, adapter_ratio)
        self.neck = nn.Sequential(nn.Conv2d(table[cut - 1].cout, neck_dim, 1), LayerNorm2d(neck_dim), nn.GELU())
        rates = torch.linspace(0.0, drop_path_rate, depth).tolist()
        from models.datar import DATARStage

        self.blocks = DATARStage(*[DATARBlock(neck_dim, num_heads, attn="deformable", diff=diff, depth=i,
                                              kv_stride=kv_stride, offset_range=offset_range, mlp_ratio=mlp_ratio,
                                              drop_path=rates[i], rpb_hidden=16, adapter=adapter,
                                              adapter_ratio=adapter_ratio, adapter_scale=adapter_scale,
                                              loaa_axis="time" if i % 2 == 0 else "freq",
                                              spatial_adapter=spatial_adapter) for i in range(depth)])
        self.norm = LayerNorm2d(neck_dim)
        self.num_features = neck_dim
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(neck_dim, num_classes)
        self.frame_head = nn.Linear(neck_dim, num_classes)
        self.frontend = efficientat_frontend(16000, num_mel_bins)
        _init_weights(self.features)
        self._init_heads()

    def _init_heads(self) -> None:
        for head in (self.head, self.frame_head):
            nn.init.normal_(head.weight, 0.0, 0.01)
            nn.init.constant_(head.bias, HEAD_BIAS_INIT if self.output_activation == "sigmoid" else 0.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(B, D, F', T')`` of input ``x`` ``(B, T, F)`` (checked)."""
        self.check_input(x)
        x = x.transpose(1, 2).unsqueeze(1)  # (B, T, F) -> (B, 1, F, T)
        if getattr(self.input_adaptor, "foldable", False):
            conv, bn, act = self.features[0]  # the adaptor's 1x1 output map folded into the stem's first conv
            x = _run_stem(self.features, self.stem_adapters, self.adapter_scale,
                          act(self.input_adaptor.fold_into(conv, x, bn)), start=1)
        else:
            x = _run_stem(self.features, self.stem_adapters, self.adapter_scale, self.input_adaptor(x))
        return self.norm(self.blocks(self.neck(x)))

    def forward_head(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip logits ``(B, C)`` from the mean over frames, frame logits ``(B, T', C)`` per time column."""
        frames = self.head_drop(feats.mean(dim=2).transpose(1, 2))  # (B, D, F', T') -> (B, T', D)
        return self.head(frames.mean(dim=1)), self.frame_head(frames)

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    #: the fine-tuning methods of :func:`models.peft.prepare` this family takes
    peft_methods = ("head", "aat", "loaa", "full")

    def get_classifier(self) -> list[nn.Module]:
        """The clip and frame heads (what ``--peft head`` trains)."""
        return [self.head, self.frame_head]

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh clip and frame heads for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
        self.frame_head = nn.Linear(self.num_features, num_classes)
        self._init_heads()


@register_model
def mn04(**kwargs) -> MobileNetAudio:
    """MobileNetV3 width 0.4, the shape of EfficientAT's ``mn04_as``: 0.98 M parameters with the 527-class head."""
    return MobileNetAudio(**{"width_mult": 0.4, **kwargs})


@register_model
def mn10(**kwargs) -> MobileNetAudio:
    """MobileNetV3 width 1.0 (EfficientAT ``mn10`` shape; random init here, no checkpoint provided)."""
    return MobileNetAudio(**{"width_mult": 1.0, **kwargs})


@register_model
def mn_test(**kwargs) -> MobileNetAudio:
    """A tiny MobileNet for tests: width 0.1, 32 mel bins, 10 classes."""
    return MobileNetAudio(**{"num_classes": 10, "num_mel_bins": 32, "width_mult": 0.1, "head_hidden": 320,
                             **kwargs})


@register_model
def datar_mn04(**kwargs) -> DATARMN:
    """DATAR-MN on the ``mn04`` stem: input adaptor, all 15 blocks with the last time stride 1 (160 ms frames),
    neck 96, one deformable-attention block, clip and frame heads."""
    return DATARMN(**{"width_mult": 0.4, "cut": 15, "time_strides": (2, 2, 2, 1), "neck_dim": 96, "depth": 1,
                      "num_heads": 4, **kwargs})


@register_model
def datar_mn_test(**kwargs) -> DATARMN:
    """A tiny DATAR-MN for tests: width 0.1, 32 mel bins, cut 12, neck 16, 10 classes."""
    return DATARMN(**{"num_classes": 10, "num_mel_bins": 32, "width_mult": 0.1, "cut": 12, "neck_dim": 16,
                      "num_heads": 2, **kwargs})
