"""Reusable building blocks shared by the model families (timm-style ``layers``)."""
from models.layers.adapters import ADAPTER_KINDS, LOAA_AXES, BottleneckAdapter, LoAAAdapter
from models.layers.attention import (ATTENTION_KINDS, Attention, DiffAttention, HeadRMSNorm, build_attention,
                                     diff_head_dim, diff_lambda, diff_lambda_vectors, lambda_init_fn)
from models.layers.mlp import DropPath, Mlp, drop_path
from models.layers.patch import PatchEmbed, grid_size, resample_axis, resample_pos_embed

__all__ = ["ADAPTER_KINDS", "LOAA_AXES", "BottleneckAdapter", "LoAAAdapter",
           "ATTENTION_KINDS", "Attention", "DiffAttention", "HeadRMSNorm", "build_attention", "lambda_init_fn",
           "diff_head_dim", "diff_lambda", "diff_lambda_vectors",
           "DropPath", "Mlp", "drop_path",
           "PatchEmbed", "grid_size", "resample_axis", "resample_pos_embed"]
