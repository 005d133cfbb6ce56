"""Audio Spectrogram Transformer (Gong et al., Interspeech 2021) with attention and adapter options.

A ViT over overlapping 16x16 patches (stride 10) of the log-mel spectrogram, with cls and
distillation tokens. The token layout and parameter shapes follow the Hugging Face ``ASTModel``,
so that :func:`models.io.load_ast_checkpoint` loads AudioSet checkpoints unchanged.

Options on every variant:
- ``attn``: ``'mha'`` (multi-head), ``'diff'`` (Differential Transformer) or ``'asda'`` (ASDA) attention;
- ``adapter``: ``None``, ``'aat'`` (Audio Adapter Tuning: a bottleneck adapter in parallel with each MLP,
  scaled by ``adapter_scale``, and a spatial adapter with an inner skip after each attention) or
  ``'loaa'`` (a grid-convolution adapter in parallel with each MLP, along time or frequency per layer).
  Up-projections start at zero, so a fresh adapter leaves the backbone's output unchanged.

Any window of ``t_min`` to ``t_max`` frames works: the position embeddings, learnt on the grid of
``native_frames`` frames, are centre-cropped (shorter) or linearly interpolated (longer) along time.

Example:
    >>> import torch
    >>> from models import create_model
    >>> model = create_model("ast_test", adapter="aat").eval()
    >>> clip, frames = model.forward_logits(torch.zeros(1, 100, 64))
    >>> clip.shape, frames.shape
    (torch.Size([1, 10]), torch.Size([1, 9, 10]))
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from models.base import AEDModel
from models.layers import (ADAPTER_KINDS, ATTENTION_KINDS, BottleneckAdapter, DropPath, LoAAAdapter, Mlp,
                           PatchEmbed, build_attention, resample_axis)
from models.registry import register_model

__all__ = ["AST", "Block", "ast_base", "ast_small", "ast_tiny", "ast_test"]


class Block(nn.Module):
    """Pre-norm transformer block with optional AAT or LoAA adapters.

    Without adapters: ``x + A(LN(x))`` then ``x + MLP(LN(x))``. With ``adapter='aat'``:
    ``x + S(A(LN(x)))`` with ``S(h) = h + adapter(h)``, then ``x + MLP(LN(x)) + s * adapter(LN(x))``.
    With ``adapter='loaa'``: ``x + MLP(LN(x)) + s * loaa(LN(x))``.

    Args:
        dim: token width D.
        num_heads: attention heads.
        depth: 0-based index of the block (for differential attention's lambda_init).
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: bias on the query/key/value projection.
        attn: attention option (``'mha'``, ``'diff'``, ``'asda'``).
        fused_attn: use fused SDPA attention.
        drop: dropout after the attention and MLP projections.
        drop_path: stochastic depth probability of both residual branches.
        norm_eps: LayerNorm epsilon.
        adapter: ``None``, ``'aat'`` or ``'loaa'``.
        adapter_ratio: adapter bottleneck width as a fraction of D.
        adapter_scale: scale ``s`` of the parallel MLP adapter.
        loaa_axis: ``'time'`` or ``'freq'`` for ``adapter='loaa'``.
    """

    def __init__(self, dim: int, num_heads: int, depth: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 attn: str = "mha", fused_attn: bool = True, drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, adapter: str | None = None, adapter_ratio: float = 0.25,
                 adapter_scale: float = 0.5, loaa_axis: str = "time") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = build_attention(attn, dim, num_heads, depth=depth, fused_attn=fused_attn, qkv_bias=qkv_bias,
                                    proj_drop=drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path)
        self.adapter_scale = adapter_scale
        self.spatial_adapter: nn.Module | None = None
        self.mlp_adapter: nn.Module | None = None
        if adapter == "aat":
            self.spatial_adapter = BottleneckAdapter(dim, adapter_ratio)
            self.mlp_adapter = BottleneckAdapter(dim, adapter_ratio)
        elif adapter == "loaa":
            self.mlp_adapter = LoAAAdapter(dim, axis=loaa_axis, ratio=adapter_ratio)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 2) -> torch.Tensor:
        """Transform tokens ``(B, P + F' * T', D)`` laid out on ``grid`` (read by LoAA only)."""
        h = self.attn(self.norm1(x))
        if self.spatial_adapter is not None:
            h = h + self.spatial_adapter(h)
        x = x + self.drop_path1(h)
        y = self.norm2(x)
        h = self.mlp(y)
        if self.mlp_adapter is not None:
            h = h + self.adapter_scale * self.mlp_adapter(y, grid, num_prefix_tokens)
        return x + self.drop_path2(h)


class AST(AEDModel):
    """Audio Spectrogram Transformer with a clip head and a frame-wise head.

    Args:
        num_classes: output classes C.
        num_mel_bins: input mel bins F.
        embed_dim: token width D.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        patch_size: patch side.
        stride: patch step on both axes.
        qkv_bias: bias on the query/key/value projections.
        attn: ``'mha'``, ``'diff'`` or ``'asda'``.
        adapter: ``None``, ``'aat'`` or ``'loaa'``.
        adapter_ratio: adapter bottleneck width as a fraction of D.
        adapter_scale: scale of the adapters in parallel with the MLPs.
        loaa_axes: ``'time'``/``'freq'`` per block for ``adapter='loaa'``; default time in the lower half,
            frequency in the upper half.
        fused_attn: use fused SDPA attention.
        t_min: shortest accepted window, in frames.
        t_max: longest accepted window, in frames.
        native_frames: window length of the position-embedding grid.
        output_activation: ``'sigmoid'`` (multi-label) or ``'softmax'``.
        drop_rate: dropout rate.
        drop_path: stochastic depth rate, rising linearly to this value over the blocks.
        norm_eps: LayerNorm epsilon (1e-6 in the original AST, 1e-12 in Hugging Face's config).
        separate_frame_head: give the frame head its own LayerNorm + Linear instead of sharing the clip head's.
    """

    num_prefix_tokens = 2

    def __init__(self, num_classes: int = 527, num_mel_bins: int = 128, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, patch_size: int = 16, stride: int = 10,
                 qkv_bias: bool = True, attn: str = "mha", adapter: str | None = None, adapter_ratio: float = 0.25,
                 adapter_scale: float = 0.5, loaa_axes: Sequence[str] | None = None, fused_attn: bool = True,
                 t_min: int = 50, t_max: int = 1024, native_frames: int = 1024, output_activation: str = "sigmoid",
                 drop_rate: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 separate_frame_head: bool = False) -> None:
        super().__init__()
        if attn not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {attn!r}; accepted: {', '.join(ATTENTION_KINDS)}")
        if adapter not in ADAPTER_KINDS:
            raise ValueError(f"unknown adapter {adapter!r}; accepted: {', '.join(map(repr, ADAPTER_KINDS))}")
        if output_activation not in ("sigmoid", "softmax"):
            raise ValueError(f"output_activation must be 'sigmoid' or 'softmax', got {output_activation!r}")
        if num_mel_bins < patch_size or t_min < patch_size or not (t_min <= t_max):
            raise ValueError(f"need patch_size={patch_size} <= num_mel_bins={num_mel_bins} and "
                             f"patch_size <= t_min={t_min} <= t_max={t_max}")
        if loaa_axes is None:
            loaa_axes = ["time"] * (depth // 2) + ["freq"] * (depth - depth // 2)
        loaa_axes = list(loaa_axes)
        if len(loaa_axes) != depth:
            raise ValueError(f"loaa_axes needs one entry per block ({depth}), got {len(loaa_axes)}")
        self.num_classes = num_classes
        self.num_mel_bins = num_mel_bins
        self.t_min, self.t_max = t_min, t_max
        self.output_activation = output_activation
        self.embed_dim = embed_dim
        self.attn_kind, self.adapter = attn, adapter
        self.native_frames = native_frames

        self.patch_embed = PatchEmbed(embed_dim, patch_size=patch_size, stride=stride)
        self.native_grid = self.patch_embed.grid_size(num_mel_bins, native_frames)
        num_patches = self.native_grid[0] * self.native_grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, depth=i, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, attn=attn,
                  fused_attn=fused_attn, drop=drop_rate, drop_path=dpr[i], norm_eps=norm_eps, adapter=adapter,
                  adapter_ratio=adapter_ratio, adapter_scale=adapter_scale, loaa_axis=loaa_axes[i])
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes)
        self.frame_head_norm: nn.Module | None = None
        self.frame_head: nn.Module | None = None
        if separate_frame_head:
            self.frame_head_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
            self.frame_head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.endswith("adapter.up"):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    #: the fine-tuning methods of :func:`models.peft.prepare` this family takes
    peft_methods = ("head", "aat", "loaa", "full")

    def get_classifier(self) -> list[nn.Module]:
        """The head modules (trainable in parameter-efficient fine-tuning)."""
        return [m for m in (self.head_norm, self.head, self.frame_head_norm, self.frame_head) if m is not None]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head(s) with fresh ones for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes)
        if self.frame_head is not None:
            self.frame_head = nn.Linear(self.embed_dim, num_classes)

    def grid(self, num_frames: int) -> tuple[int, int]:
        """Token grid ``(F', T')`` of a window of ``num_frames`` frames."""
        return self.patch_embed.grid_size(self.num_mel_bins, num_frames)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens ``(B, 2 + F' * T', D)`` (cls, distillation, then the grid frequency-major)."""
        self.check_input(x)
        B = x.shape[0]
        x = x.transpose(1, 2).unsqueeze(1)  # (B, T, F) -> (B, 1, F, T)
        tokens = self.patch_embed(x)  # (B, 1, F, T) -> (B, F' * T', D)
        fp = self.native_grid[0]  # F' is fixed by num_mel_bins; T' follows from the token count
        D = self.embed_dim
        grid_tokens = tokens.reshape(B, fp, -1, D)  # (B, F' * T', D) -> (B, F', T', D)
        pos = self.pos_embed[:, self.num_prefix_tokens:].reshape(1, fp, self.native_grid[1], D)  # (1, F', T0, D)
        pos = resample_axis(pos, 2, grid_tokens.shape[2])  # (1, F', T0, D) -> (1, F', T', D)
        tokens = (grid_tokens + pos).reshape(B, -1, D)  # (B, F', T', D) -> (B, F' * T', D)
        prefix = torch.cat([self.cls_token, self.dist_token], dim=1) + self.pos_embed[:, :self.num_prefix_tokens]
        x = torch.cat([prefix.expand(B, -1, -1), tokens], dim=1)  # (B, 2 + F' * T', D)
        x = self.pos_drop(x)
        grid = (fp, grid_tokens.shape[2])
        for blk in self.blocks:
            x = blk(x, grid, self.num_prefix_tokens)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip logits ``(B, C)`` and frame logits ``(B, T', C)`` from tokens ``(B, 2 + F' * T', D)``."""
        B, _, D = x.shape
        pooled = x[:, :self.num_prefix_tokens].mean(dim=1)  # (B, 2, D) -> (B, D)
        clip = self.head(self.head_norm(pooled))
        grid = x[:, self.num_prefix_tokens:].reshape(B, self.native_grid[0], -1, D)  # -> (B, F', T', D)
        frames = grid.mean(dim=1)  # (B, F', T', D) -> (B, T', D)
        if self.frame_head is not None:
            frame_logits = self.frame_head(self.frame_head_norm(frames))
        else:
            frame_logits = self.head(self.head_norm(frames))
        return clip, frame_logits  # (B, C), (B, T', C)

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clip_logits (B, C), frame_logits (B, T', C))`` for a window ``x`` ``(B, T, F)``."""
        return self.forward_head(self.forward_features(x))


def _create(defaults: dict[str, Any], kwargs: dict[str, Any]) -> AST:
    return AST(**{**defaults, **kwargs})


@register_model
def ast_base(**kwargs: Any) -> AST:
    """AST-Base/16 (stride 10) as trained on AudioSet: 768 wide, 12 blocks, 12 heads, 128 mel, 527 classes."""
    return _create(dict(embed_dim=768, depth=12, num_heads=12, num_mel_bins=128, num_classes=527,
                        native_frames=1024, t_max=1024), kwargs)


@register_model
def ast_small(**kwargs: Any) -> AST:
    """AST-Small (DeiT-S sizes): 384 wide, 12 blocks, 6 heads, 128 mel."""
    return _create(dict(embed_dim=384, depth=12, num_heads=6, num_mel_bins=128, num_classes=527,
                        native_frames=1024, t_max=1024), kwargs)


@register_model
def ast_tiny(**kwargs: Any) -> AST:
    """AST-Tiny (DeiT-Ti sizes): 192 wide, 12 blocks, 3 heads, 128 mel."""
    return _create(dict(embed_dim=192, depth=12, num_heads=3, num_mel_bins=128, num_classes=527,
                        native_frames=1024, t_max=1024), kwargs)


@register_model
def ast_test(**kwargs: Any) -> AST:
    """A tiny AST for tests: 32 wide, 2 blocks, 2 heads, 64 mel, 10 classes, native grid of 100 frames."""
    return _create(dict(embed_dim=32, depth=2, num_heads=2, num_mel_bins=64, num_classes=10,
                        native_frames=100, t_max=1024), kwargs)
