"""Reusable building blocks shared by the model families (timm-style ``layers``)."""
from models.layers.attention import (ATTENTION_KINDS, Attention, DiffAttention, HeadRMSNorm, build_attention,
                                     lambda_init_fn)
from models.layers.mlp import DropPath, Mlp, drop_path

__all__ = ["ATTENTION_KINDS", "Attention", "DiffAttention", "HeadRMSNorm", "build_attention", "lambda_init_fn",
           "DropPath", "Mlp", "drop_path"]
