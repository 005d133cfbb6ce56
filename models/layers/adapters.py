"""Adapters for parameter-efficient fine-tuning of a frozen transformer.

- :class:`BottleneckAdapter`: ``up(GELU(down(x)))`` with ``D -> D * ratio -> D``; the up-projection
  starts at zero, so a fresh adapter adds nothing and the backbone's output is unchanged. Used twice
  per block by AAT (Audio Adapter Tuning): in parallel with the MLP and, with an inner skip, after the
  attention.
- :class:`LoAAAdapter`: the same bottleneck, with a convolution along one axis of the ``(F', T')``
  token grid inside it (``1 x 3`` along time, ``3 x 1`` along frequency), so that the adapter mixes
  neighbouring patches.
- :class:`MapAdapter`: the same two adapters for a feature *map* ``(B, C, F', T')`` (a CNN stem's or a
  deformable stage's): 1x1 convolutions for the bottleneck, and for LoAA a ``1 x 3`` or ``3 x 1`` convolution
  between them. ``kind="mlp"`` is AAT's bottleneck, ``"time"`` / ``"freq"`` are LoAA's.

Example:
    >>> import torch
    >>> x = torch.randn(2, 2 + 5 * 9, 32)
    >>> LoAAAdapter(32, axis="time")(x, grid=(5, 9), num_prefix_tokens=2).abs().max().item()
    0.0
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["BottleneckAdapter", "LoAAAdapter", "MapAdapter", "ADAPTER_TYPES", "ADAPTER_KINDS", "LOAA_AXES"]

ADAPTER_KINDS = (None, "aat", "loaa")
LOAA_AXES = ("time", "freq")


def _bottleneck_width(dim: int, ratio: float) -> int:
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"adapter ratio must be in (0, 1], got {ratio}")
    return max(1, int(round(dim * ratio)))


class BottleneckAdapter(nn.Module):
    """``Linear(D, r) -> GELU -> Linear(r, D)`` with ``r = D * ratio`` and a zero-initialised up-projection.

    Args:
        dim: token width D.
        ratio: bottleneck width as a fraction of D.
    """

    def __init__(self, dim: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = _bottleneck_width(dim, ratio)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None, num_prefix_tokens: int = 0) -> torch.Tensor:
        """Adapter output for tokens ``x`` ``(..., D)``; ``grid`` and ``num_prefix_tokens`` are ignored."""
        return self.up(self.act(self.down(x)))


class LoAAAdapter(nn.Module):
    """Bottleneck adapter that convolves along one axis of the patch grid.

    The grid tokens are reshaped to ``(B, r, F', T')`` inside the bottleneck and convolved with a
    ``1 x 3`` (time) or ``3 x 1`` (frequency) kernel; prefix tokens (cls, distillation) skip the
    convolution. The up-projection starts at zero.

    Args:
        dim: token width D.
        axis: ``'time'`` or ``'freq'``.
        ratio: bottleneck width as a fraction of D.
        kernel_size: convolution length along the chosen axis.
    """

    def __init__(self, dim: int, axis: str = "time", ratio: float = 0.25, kernel_size: int = 3) -> None:
        super().__init__()
        if axis not in LOAA_AXES:
            raise ValueError(f"unknown LoAA axis {axis!r}; accepted: {', '.join(LOAA_AXES)}")
        hidden = _bottleneck_width(dim, ratio)
        self.axis = axis
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        k, p = (1, kernel_size), (0, kernel_size // 2)
        if axis == "freq":
            k, p = k[::-1], p[::-1]
        self.conv = nn.Conv2d(hidden, hidden, kernel_size=k, padding=p)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
        """Adapter output for tokens ``x`` ``(B, P + F' * T', D)`` laid out frequency-major on ``grid``.

        Args:
            x: prefix tokens followed by the grid tokens.
            grid: ``(F', T')``; only ``F'`` is read, ``T'`` follows from the token count.
            num_prefix_tokens: number of leading tokens outside the grid.
        """
        h = self.act(self.down(x))  # (B, N, r)
        prefix, tokens = h[:, :num_prefix_tokens], h[:, num_prefix_tokens:]
        B, _, r = tokens.shape
        tokens = tokens.reshape(B, grid[0], -1, r).permute(0, 3, 1, 2)  # (B, F' * T', r) -> (B, r, F', T')
        tokens = self.act(self.conv(tokens))
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, r, F', T') -> (B, F' * T', r)
        return self.up(torch.cat([prefix, tokens], dim=1))

    def extra_repr(self) -> str:
        return f"axis={self.axis!r}"


class MapAdapter(nn.Module):
    """A zero-initialised bottleneck adapter on a feature map ``(B, C, F', T')``.

    ``kind="mlp"``: ``1x1 -> GELU -> 1x1`` (AAT's adapter, per position); ``"time"``: ``1x1 -> GELU -> 1x3 -> GELU
    -> 1x1`` (LoAA along time); ``"freq"``: the same with ``3x1`` (LoAA along frequency). The output convolution
    starts at zero, so a fresh adapter adds nothing.

    Args:
        cin: input channels.
        cout: output channels (default ``cin``; an adapter in parallel with a block that changes the width).
        kind: ``"mlp"``, ``"time"`` or ``"freq"``.
        ratio: bottleneck width as a fraction of ``cin`` (at least 4 channels).
        kernel_size: length of the LoAA convolution.

    Example:
        >>> MapAdapter(16, kind="freq")(torch.randn(1, 16, 4, 7)).abs().max().item()
        0.0
    """

    KINDS = ("mlp", *LOAA_AXES)

    def __init__(self, cin: int, cout: int | None = None, kind: str = "mlp", ratio: float = 0.25,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown map adapter kind {kind!r}; accepted: {', '.join(self.KINDS)}")
        hidden = max(4, _bottleneck_width(cin, ratio))
        self.kind = kind
        self.down = nn.Conv2d(cin, hidden, 1)
        self.act = nn.GELU()
        self.conv: nn.Module | None = None
        if kind != "mlp":
            k, p = ((1, kernel_size), (0, kernel_size // 2)) if kind == "time" else ((kernel_size, 1), (kernel_size // 2, 0))
            self.conv = nn.Conv2d(hidden, hidden, kernel_size=k, padding=p)
        self.up = nn.Conv2d(hidden, cout or cin, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adapter output for a map ``x`` ``(B, C, F', T')``: ``(B, cout, F', T')``."""
        h = self.act(self.down(x))
        if self.conv is not None:
            h = self.act(self.conv(h))
        return self.up(h)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


#: every adapter module type (what PEFT trains besides the heads)
ADAPTER_TYPES = (BottleneckAdapter, LoAAAdapter, MapAdapter)
