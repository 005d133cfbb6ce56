"""Feed-forward block of a transformer layer and stochastic depth.

Example:
    >>> import torch
    >>> mlp = Mlp(32, hidden_features=64)
    >>> mlp(torch.zeros(2, 5, 32)).shape
    torch.Size([2, 5, 32])
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

__all__ = ["Mlp", "DropPath", "drop_path"]


class Mlp(nn.Module):
    """Two linear layers with an activation between them: ``fc2(drop(act(fc1(x))))``.

    Args:
        in_features: input (and default output) width.
        hidden_features: inner width; defaults to ``in_features``.
        out_features: output width; defaults to ``in_features``.
        act_layer: activation module class (called with no arguments).
        drop: dropout probability after the activation and after ``fc2``.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: Callable[[], nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to the last dimension of ``x`` (``(..., in_features)``)."""
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(x))


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p`` and rescale the rest by ``1 / (1 - p)``.

    Args:
        x: residual branch output, batch first.
        p: drop probability in [0, 1).
        training: drop only in training mode; otherwise ``x`` is returned unchanged.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # (B, 1, ..., 1): one draw per sample
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016) applied per sample to a residual branch.

    Args:
        p: probability of dropping the branch for a sample, in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not (0.0 <= p < 1.0):
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop the branch ``x`` for random samples while training."""
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
