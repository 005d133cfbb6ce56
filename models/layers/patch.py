"""Patch embedding over the (frequency, time) plane and position-embedding resampling.

Tokens are ordered frequency-major, as in the Hugging Face ``ASTEmbeddings`` layout: the patch at
grid cell ``(f', t')`` is token ``f' * T' + t'``.

Position embeddings learnt on a native grid ``(F0, T0)`` are resampled to the token grid of the
current window, axis by axis, with the AST convention (Gong et al., 2021): centre crop when the new
axis is shorter, linear interpolation (``F.interpolate(mode='bilinear', align_corners=False)``) when
it is longer. :func:`resample_axis` does both with one gather-and-blend built from ``arange`` over
the tensor's own sizes, with no Python branch on a size, so that an exported graph stays correct at
every window length.

Example:
    >>> import torch
    >>> pe = PatchEmbed(embed_dim=32, patch_size=16, stride=10)
    >>> tokens = pe(torch.zeros(2, 1, 64, 100))
    >>> tokens.shape, pe.grid_size(64, 100)
    (torch.Size([2, 45, 32]), (5, 9))
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PatchEmbed", "grid_size", "resample_axis", "resample_pos_embed"]


def grid_size(num_mel_bins: int, num_frames: int, patch_size: int = 16, stride: int = 10) -> tuple[int, int]:
    """Token grid ``(F', T')`` of a ``(F, T)`` spectrogram cut into ``patch_size`` patches every ``stride``."""
    return (num_mel_bins - patch_size) // stride + 1, (num_frames - patch_size) // stride + 1


class PatchEmbed(nn.Module):
    """Overlapping square patches of a ``(B, C, F, T)`` spectrogram, projected to ``embed_dim`` tokens.

    Args:
        embed_dim: token width D.
        patch_size: patch side, in bins and frames.
        stride: step between patches on both axes (10 in AST: overlapping 16x16 patches).
        in_chans: input channels (1 for a log-mel spectrogram).
    """

    def __init__(self, embed_dim: int, patch_size: int = 16, stride: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def grid_size(self, num_mel_bins: int, num_frames: int) -> tuple[int, int]:
        """Token grid ``(F', T')`` for a ``(F, T)`` input."""
        return grid_size(num_mel_bins, num_frames, self.patch_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` ``(B, C, F, T)`` into tokens ``(B, F' * T', D)``, frequency-major."""
        x = self.proj(x)  # (B, C, F, T) -> (B, D, F', T')
        return x.flatten(2).transpose(1, 2)  # (B, D, F', T') -> (B, F' * T', D)


def resample_axis(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Resample axis ``dim`` of ``x`` to ``size``: centre crop when shorter, linear interpolation when longer.

    The crop keeps source indices ``n // 2 - size // 2 + j`` (AST's crop); the interpolation equals
    ``F.interpolate(..., mode='bilinear', align_corners=False)`` along that axis. ``size`` may be a traced
    size: everything is computed with tensor operations, so an exported graph handles any length.

    Args:
        x: tensor to resample.
        dim: axis to resample.
        size: new length of that axis.
    """
    n_src = x.shape[dim]
    j = torch.arange(size, device=x.device, dtype=torch.float32)  # (size,)
    n = torch.ones_like(j).sum()  # size as a float tensor, traced by every exporter
    src_lin = ((j + 0.5) * (n_src / n) - 0.5).clamp(min=0.0)
    src_crop = j + (n_src // 2) - torch.floor(n / 2)
    src = torch.where(n > n_src, src_lin, src_crop)  # (size,) fractional source positions
    i0 = torch.floor(src).clamp(max=n_src - 1)
    w = (src - i0).to(x.dtype)
    i1 = (i0 + 1).clamp(max=n_src - 1)
    w_shape = [1] * x.dim()
    w_shape[dim] = -1
    w = w.reshape(w_shape)  # (size,) -> broadcastable along `dim`
    lo = x.index_select(dim, i0.long())
    hi = x.index_select(dim, i1.long())
    return lo * (1.0 - w) + hi * w


def resample_pos_embed(pos_embed: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int],
                       num_prefix_tokens: int = 0) -> torch.Tensor:
    """Resample position embeddings ``(1, P + F0 * T0, D)`` from grid ``(F0, T0)`` to ``(F', T')``.

    Args:
        pos_embed: embeddings of the prefix tokens followed by the grid tokens, frequency-major.
        src_grid: the native grid ``(F0, T0)``.
        dst_grid: the target grid ``(F', T')``.
        num_prefix_tokens: leading tokens (cls, distillation) that are kept as they are.

    Returns:
        ``(1, P + F' * T', D)``.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    D = grid.shape[-1]
    grid = grid.reshape(grid.shape[0], src_grid[0], src_grid[1], D)  # (1, F0 * T0, D) -> (1, F0, T0, D)
    grid = resample_axis(grid, 1, dst_grid[0])
    grid = resample_axis(grid, 2, dst_grid[1])
    grid = grid.reshape(grid.shape[0], -1, D)  # (1, F', T', D) -> (1, F' * T', D)
    return torch.cat([prefix, grid], dim=1)
