"""Model families, registry and checkpoint I/O (needs the ``torch`` extra).

Example:
    >>> import torch
    >>> from models import create_model
    >>> model = create_model("ast_test").eval()
    >>> model(torch.zeros(1, 100, 64)).shape
    torch.Size([1, 10])
"""
from models import peft
from models.base import AEDModel
from models.efficientat import load_efficientat_checkpoint
from models.io import export_onnx, load, load_ast_checkpoint, save
from models.registry import create_model, is_model, list_models, register_model

__all__ = ["AEDModel", "create_model", "list_models", "is_model", "register_model", "save", "load", "export_onnx",
           "load_ast_checkpoint", "load_efficientat_checkpoint", "peft"]
