"""Behaviour every aed model shares: the (B, T, F) input check and the scoring activation."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["AEDModel"]


class AEDModel(nn.Module):
    """Base class for model families.

    Subclasses set ``num_classes``, ``num_mel_bins``, ``t_min``, ``t_max`` and
    ``output_activation`` (``"sigmoid"`` or ``"softmax"``) and implement :meth:`forward_logits`.
    """

    num_classes: int
    num_mel_bins: int
    t_min: int
    t_max: int
    output_activation: str = "sigmoid"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the accepted shape when ``x`` is not ``(B, T, F)`` in range."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor (B, T, {self.num_mel_bins}), got {type(x).__name__}")
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return  # shapes are symbolic here; checked by the runtime that feeds the graph
        if x.dim() != 3 or x.shape[-1] != self.num_mel_bins:
            raise ValueError(f"expected input of shape (B, T, {self.num_mel_bins}) with {self.t_min} <= T <= "
                             f"{self.t_max}, got {tuple(x.shape)}")
        if not (self.t_min <= x.shape[1] <= self.t_max):
            raise ValueError(f"window length T={x.shape[1]} frames is outside the accepted range "
                             f"[{self.t_min}, {self.t_max}] for input (B, T, {self.num_mel_bins})")

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(clip_logits (B, C), frame_logits (B, T', C) or None)``."""
        raise NotImplementedError

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.output_activation == "softmax":
            return torch.softmax(logits.float(), dim=-1)
        return torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip scores ``(B, C)`` in [0, 1]."""
        return self.activate(self.forward_logits(x)[0])

    def forward_with_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clip scores ``(B, C)`` and frame scores ``(B, T', C)`` (None where the model has no frame head)."""
        clip, frames = self.forward_logits(x)
        return self.activate(clip), (None if frames is None else self.activate(frames))
