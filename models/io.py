"""Checkpoints (safetensors + JSON config), ONNX export, and Hugging Face AST checkpoint loading.

Nothing here unpickles: weights are read with safetensors only.

Example:
    >>> import tempfile
    >>> from models import create_model, save, load
    >>> d = tempfile.mkdtemp()
    >>> _ = save(create_model("ast_test"), d, labels=[f"c{i}" for i in range(10)])
    >>> model, config = load(d)
    >>> config.name, config.num_mel_bins
    ('ast_test', 64)
"""
from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from models.registry import create_model
from realtime.config import DetectionSettings, FrontEndConfig, InputRange, ModelConfig, WindowConfig
from realtime.errors import ConfigError, ModelFileError

__all__ = ["build_config", "save", "save_with_config", "save_adapter", "load", "read_config", "export_onnx",
           "verify_export", "load_ast_checkpoint", "weights_sha256", "ONNX_OPSET", "CONFIG_KEY"]

log = logging.getLogger(__name__)

ONNX_OPSET = 17
CONFIG_KEY = "aed_config"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def build_config(model: nn.Module, labels: Sequence[str] | None = None, frontend: FrontEndConfig | None = None,
                 window: WindowConfig | None = None, thresholds: Mapping[str, Any] | None = None,
                 training: Mapping[str, Any] | None = None) -> ModelConfig:
    """The :class:`~realtime.config.ModelConfig` (``docs/contracts.md``) of a model built with :func:`models.create_model`.

    Args:
        model: the model; it must carry ``model_name`` and ``model_kwargs`` (set by ``create_model``).
        labels: class names, one per output; default ``model.labels`` if set, else ``class_0 ...``.
        frontend: front-end settings; default ``model.frontend`` where the family has its own (the MobileNets:
            EfficientAT's), else ``FrontEndConfig(num_mel_bins=model.num_mel_bins)``.
        window: window and hop; default ``WindowConfig()``.
        thresholds: ``{"default": float, "per_class": {label: float}}``; default 0.5 for every class.
        training: provenance and metrics, stored as given.
    """
    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("the model has no registry name; build it with models.create_model(name, **kwargs)")
    if labels is None:
        labels = getattr(model, "labels", None) or [f"class_{i}" for i in range(model.num_classes)]
    labels = [str(label) for label in labels]
    if len(labels) != model.num_classes:
        raise ModelFileError(f"got {len(labels)} labels for a model with {model.num_classes} classes")
    frontend = frontend or getattr(model, "frontend", None) or FrontEndConfig(num_mel_bins=model.num_mel_bins)
    if frontend.num_mel_bins != model.num_mel_bins:
        raise ModelFileError(f"front end has {frontend.num_mel_bins} mel bins, the model expects {model.num_mel_bins}")
    window = window or WindowConfig()
    t = dict(thresholds) if thresholds is not None else {}
    return ModelConfig(
        name=name, kwargs=dict(getattr(model, "model_kwargs", {})), labels=tuple(labels), frontend=frontend,
        window=window, output_activation=model.output_activation,
        input=InputRange(t_min=model.t_min, t_max=model.t_max),
        detection=DetectionSettings.from_dict(t), training=dict(training) if training is not None else {})


def save(model: nn.Module, directory: str | os.PathLike, labels: Sequence[str] | None = None,
         frontend: FrontEndConfig | None = None, window: WindowConfig | None = None,
         thresholds: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json``.

    Args:
        model: a model built with :func:`models.create_model`.
        directory: created if missing.
        labels: class names (see :func:`build_config`).
        frontend: front-end settings.
        window: window and hop.
        thresholds: detection thresholds.
        training: provenance and metrics.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    config = build_config(model, labels, frontend, window, thresholds, training)
    return save_with_config(model, directory, config)


def save_with_config(model: nn.Module, directory: str | os.PathLike, config: ModelConfig) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` from a ready :class:`ModelConfig`."""
    from safetensors.torch import save_file

    config = ModelConfig.from_dict(config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "name": config.name})
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    return directory


def weights_sha256(directory: str | os.PathLike) -> str:
    """The sha256 of a checkpoint directory's ``model.safetensors`` (what an adapter checkpoint's base is named by)."""
    import hashlib

    h = hashlib.sha256()
    with open(Path(directory) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_adapter(model: nn.Module, directory: str | os.PathLike, config: ModelConfig, base: str | os.PathLike,
                 names: Sequence[str], method: str) -> Path:
    """Write a small checkpoint: only the tensors ``names`` (what PEFT trained) and a config naming the base.

    The base is referred to by its path and the sha256 of its ``model.safetensors``; :func:`load` rebuilds the full
    model from the base's tensors and these, and refuses a base whose weights differ.

    Raises:
        ModelFileError: the base is itself an adapter checkpoint, or has no weights.
    """
    from dataclasses import replace

    from safetensors.torch import save_file

    base = Path(base)
    base_config = read_config(base)
    if base_config.base:
        raise ModelFileError(f"{base} is itself an adapter checkpoint; train from its base model instead")
    config = replace(ModelConfig.from_dict(config), base={"path": str(base.resolve()), "sha256": weights_sha256(base),
                                                          "method": method, "tensors": len(names)})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    own = {k: state[k].detach().cpu().contiguous() for k in sorted(names)}
    save_file(own, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "name": config.name, "adapter": method})
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    return directory


def _find_base(directory: Path, base: Mapping[str, Any]) -> Path:
    """The base model directory of an adapter checkpoint: the recorded path, or the shipped default, whichever holds
    weights with the recorded sha256."""
    want = base["sha256"]
    candidates = [Path(base["path"])]
    default = Path(__file__).resolve().parent / "pretrained" / "aed_default"
    if default not in candidates:
        candidates.append(default)
    seen = []
    for c in candidates:
        if (c / WEIGHTS_FILE).is_file():
            got = weights_sha256(c)
            if got == want:
                return c
            seen.append(f"{c} has sha256 {got[:12]}...")
    found = "; ".join(seen) if seen else f"{base['path']} does not exist"
    raise ModelFileError(f"{directory} holds adapters for a base model with weights sha256 {want[:12]}... and no "
                         f"such base was found ({found}); restore that base model at {base['path']}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"missing model config {path}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"corrupt model config {path}: {e}") from e
    if not isinstance(config, dict):
        raise ModelFileError(f"corrupt model config {path}: expected a JSON object")
    return config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"corrupt weights file {path}: {e}") from e


def read_config(directory: str | os.PathLike) -> ModelConfig:
    """The checked :class:`ModelConfig` of a checkpoint directory (``config.json``), without building the model.

    Raises:
        FileNotFoundError: no ``config.json``.
        ModelFileError: it is not JSON, or not a valid model config (the message names the file).
    """
    path = Path(directory) / CONFIG_FILE
    try:
        return ModelConfig.from_dict(_read_json(path), origin=str(path))
    except ConfigError as e:
        raise ModelFileError(str(e)) from e


def load(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
         fresh: Sequence[str] = (), **model_overrides: Any) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a model saved by :func:`save`; returns ``(model in eval mode, config)``.

    Args:
        directory: the checkpoint directory.
        map_location: device for the weights.
        fresh: name prefixes of tensors that may be missing or of another shape (left as the new model initialised
            them, e.g. ``("head.",)`` when retargeting to other labels); every other tensor must load exactly.
        model_overrides: constructor arguments that differ from the stored ones (e.g. ``num_classes``).

    Raises:
        FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
        ModelFileError: either file is corrupt, or the weights do not fit the model the config names.
    """
    directory = Path(directory)
    config = read_config(directory)
    if not config.name:
        raise ModelFileError(f"corrupt model config {directory / CONFIG_FILE}: no 'name'")
    state = _read_safetensors(directory / WEIGHTS_FILE)
    if config.base:                       # an adapter checkpoint: the base's tensors, then the trained ones
        base_dir = _find_base(directory, config.base)
        state = {**_read_safetensors(base_dir / WEIGHTS_FILE), **state}
    model = create_model(config.name, **{**dict(config.kwargs), **model_overrides})
    if fresh:
        # a fresh tensor the checkpoint lacks, or holds in another shape, keeps the new model's initial value;
        # everything else must fit exactly: the load below is strict either way
        ours = model.state_dict()
        is_fresh = lambda k: any(k.startswith(p) for p in fresh)  # noqa: E731
        kept = {k: v for k, v in ours.items() if is_fresh(k) and (k not in state or state[k].shape != v.shape)}
        state = {**{k: v for k, v in state.items() if not (is_fresh(k) and (k in kept or k not in ours))}, **kept}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        allowed = f" (fresh tensors allowed: {list(fresh)})" if fresh else ""
        why = " ".join(str(e).split())          # torch's message spans lines; ours is one
        raise ModelFileError(f"weights in {directory} do not fit model {config.name!r}{allowed}: {why}") from e
    if not model_overrides:
        model.labels = list(config.labels)
    return model.to(map_location).eval(), config


class _ExportWrapper(nn.Module):
    """Exposes ``forward_with_frames`` as ``forward`` so that the graph has named clip and frame outputs."""

    def __init__(self, model: nn.Module, with_frames: bool) -> None:
        super().__init__()
        self.model = model
        self.with_frames = with_frames

    def forward(self, fbank: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores, frames = self.model.forward_with_frames(fbank)
        return (scores, frames) if self.with_frames else (scores,)


def export_onnx(model: nn.Module, path: str | os.PathLike, config: ModelConfig | Mapping[str, Any] | None = None,
                opset: int = ONNX_OPSET, example_frames: int | None = None) -> Path:
    """Export ``model`` to ONNX with dynamic batch and time; the config JSON goes into metadata ``aed_config``.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``): in torch 2.11 the torch.export-based
    exporter builds at opset 18 and its down-conversion to 17 fails on these graphs (the onnx version
    converter asserts on Reduce/axes inputs), leaving an opset-18 file; it also takes ~40x longer. Opset 17
    is required (from opset 20 GridSample's ``linear`` mode is not read by TensorRT; 17 gives native
    LayerNormalization). Attention is exported through the plain path (MatMul/Softmax, equal to the fused
    path), which avoids the IsNaN/Where guards that the SDPA symbolic adds.

    Args:
        model: an :class:`models.base.AEDModel`.
        path: output ``.onnx`` file.
        config: the model config to embed; default :func:`build_config` of the model.
        opset: ONNX opset.
        example_frames: window length used for tracing; default the model's native window or ``t_min``.

    Returns:
        The path written. Inputs: ``fbank`` ``(batch, time, F)``; outputs: ``scores`` ``(batch, C)`` and,
        where the model has a frame head, ``frame_scores`` ``(batch, frames, C)``.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.from_dict(config) if config is not None else build_config(model)
    T = example_frames or getattr(model, "native_frames", model.t_min)
    T = min(max(T, model.t_min), model.t_max)
    param = next(model.parameters())
    x = torch.randn(1, T, model.num_mel_bins, device=param.device, dtype=param.dtype)
    was_training = model.training
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}
    model.eval()
    try:
        for m in fused:
            m.fused_attn = False
        with torch.no_grad():
            with_frames = model.forward_logits(x)[1] is not None
        outputs = ["scores", "frame_scores"] if with_frames else ["scores"]
        dynamic_axes = {"fbank": {0: "batch", 1: "time"}, "scores": {0: "batch"}}
        if with_frames:
            dynamic_axes["frame_scores"] = {0: "batch", 1: "frames"}
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated (see the docstring for why it is still the right one here)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*",
                                    category=DeprecationWarning)
            torch.onnx.export(_ExportWrapper(model, with_frames), (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["fbank"], output_names=outputs, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
    finally:
        for m, flag in fused.items():
            m.fused_attn = flag
        model.train(was_training)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config.to_dict())
    onnx.save(proto, str(path))
    return path


def verify_export(model: nn.Module, path: str | os.PathLike) -> str:
    """Max |torch - onnxruntime| on random windows at the configured length and at the model's shortest."""
    import numpy as np
    import onnxruntime as ort

    from realtime.config import seconds_to_frames

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta:
        raise ModelFileError(f"{path}: no {CONFIG_KEY!r} metadata; export it with models.export_onnx")
    config = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]), origin=f"{path} metadata")
    t_cfg = seconds_to_frames(config.window.window_s, config.frontend)
    lo, hi = config.input.t_min, config.input.t_max
    lengths = sorted({lo, min(max(t_cfg, lo), hi)})
    rng = np.random.default_rng(0)
    worst = 0.0
    name = sess.get_inputs()[0].name
    for t in lengths:
        x = rng.standard_normal((2, t, config.num_mel_bins)).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).float().numpy()
        (got,) = sess.run(["scores"], {name: x})
        worst = max(worst, float(np.abs(got - ref).max()))
    return f"max |torch - onnxruntime| = {worst:.2e} at T = {lengths} frames"


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face AST checkpoints
# ---------------------------------------------------------------------------------------------------------------------

# Older transformers (and the checkpoints on the Hub) name the block parts differently from transformers 5;
# both are brought to the 5.x names before mapping to ours.
_HF_RENAMES = [
    (r"^audio_spectrogram_transformer\.", ""),
    (r"^encoder\.layer\.(\d+)\.", r"layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"^(layers\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]
_HF_TO_OURS = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.distillation_token$", "dist_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.layernorm\.", "head_norm."),
    (r"^classifier\.dense\.", "head."),
]


def _convert_hf_state(hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    norm: dict[str, torch.Tensor] = {}
    for k, v in hf.items():
        for pat, rep in _HF_RENAMES:
            k = re.sub(pat, rep, k)
        norm[k] = v
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in norm.items():
        m = re.match(r"^layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$", k)
        if m:
            qkv.setdefault(f"blocks.{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = v
            continue
        for pat, rep in _HF_TO_OURS:
            if re.match(pat, k):
                out[re.sub(pat, rep, k)] = v
                break
        else:
            raise ModelFileError(f"unexpected key {k!r} in an AST checkpoint")
    for k, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ModelFileError(f"incomplete query/key/value weights for {k}")
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)  # 3 x (D, ...) -> (3D, ...)
    return out


def _read_hf_source(src: str | os.PathLike | Mapping[str, torch.Tensor]
                    ) -> tuple[Mapping[str, torch.Tensor], dict[str, Any]]:
    if isinstance(src, Mapping):
        return src, {}
    path = Path(src)
    if path.is_dir():
        hf_config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
        return _read_safetensors(path / "model.safetensors"), hf_config
    if path.suffix != ".safetensors":
        raise ModelFileError(f"{path}: only safetensors checkpoints are read (pickled .bin/.pt files are never loaded); "
                         "convert it with transformers' save_pretrained(safe_serialization=True)")
    return _read_safetensors(path), {}


def load_ast_checkpoint(src: str | os.PathLike | Mapping[str, torch.Tensor], name: str = "ast_base",
                        **kwargs: Any) -> nn.Module:
    """Build an AST holding the weights of a Hugging Face ``ASTForAudioClassification`` / ``ASTModel`` checkpoint.

    Reads both the transformers 4 layout (``encoder.layer.N.attention.attention.query``; the Hub's AudioSet
    checkpoints) and the transformers 5 layout (``layers.N.attention.q_proj``). Sizes come from the tensors
    and, for a ``save_pretrained`` directory, from its ``config.json`` (heads, mel bins, strides, native length,
    LayerNorm epsilon, labels). Without a config the AudioSet defaults apply (128 mel, stride 10).

    Args:
        src: a ``save_pretrained`` directory, a ``.safetensors`` file or a state dict.
        name: registered AST variant to build on (its defaults fill what the checkpoint does not say).
        **kwargs: more constructor arguments, e.g. ``adapter='aat'`` (adapters start fresh) or ``t_min``.

    Returns:
        The model in eval mode, with ``model.labels`` when the config names them. Missing head weights (an
        ``ASTModel`` checkpoint) leave a fresh head; any other mismatch raises ``ValueError``.
    """
    hf_state, hf_config = _read_hf_source(src)
    state = _convert_hf_state(hf_state)
    if "cls_token" not in state or "pos_embed" not in state:
        raise ModelFileError("not an AST checkpoint: no cls token or position embeddings")
    D = state["cls_token"].shape[-1]
    depth = 1 + max(int(re.match(r"blocks\.(\d+)\.", k).group(1)) for k in state if k.startswith("blocks."))
    patch = state["patch_embed.proj.weight"].shape[-1]
    f_stride = hf_config.get("frequency_stride", 10)
    t_stride = hf_config.get("time_stride", 10)
    if f_stride != t_stride:
        raise ModelFileError(f"frequency stride {f_stride} != time stride {t_stride}: not supported")
    mel = hf_config.get("num_mel_bins", kwargs.get("num_mel_bins", 128))
    fp = (mel - patch) // f_stride + 1
    n_grid = state["pos_embed"].shape[1] - 2
    if n_grid % fp != 0:
        raise ModelFileError(f"position embeddings of {n_grid} grid tokens do not fit {mel} mel bins")
    native = hf_config.get("max_length", (n_grid // fp - 1) * t_stride + patch)
    derived: dict[str, Any] = dict(embed_dim=D, depth=depth, patch_size=patch, stride=f_stride, num_mel_bins=mel,
                                   native_frames=native, mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / D,
                                   qkv_bias="blocks.0.attn.qkv.bias" in state)
    if "num_attention_heads" in hf_config:
        derived["num_heads"] = hf_config["num_attention_heads"]
    if "layer_norm_eps" in hf_config:
        derived["norm_eps"] = hf_config["layer_norm_eps"]
    if "head.weight" in state:
        derived["num_classes"] = state["head.weight"].shape[0]
    derived["t_max"] = max(native, kwargs.get("t_max", 1024))
    if kwargs.get("attn", "mha") != "mha":
        raise ModelFileError("AST checkpoints hold multi-head attention weights; build with attn='mha'")
    model = create_model(name, **{**derived, **kwargs})
    ours = model.state_dict()
    unexpected = sorted(set(state) - set(ours))
    missing = sorted(set(ours) - set(state))
    fresh = [k for k in missing if "adapter" in k or k.startswith(("head.", "head_norm.", "frame_head"))]
    if unexpected or len(fresh) != len(missing):
        raise ModelFileError(f"checkpoint does not fit {name}: unexpected {unexpected[:5]}, "
                         f"missing {sorted(set(missing) - set(fresh))[:5]}")
    for k, v in state.items():
        if v.shape != ours[k].shape:
            raise ModelFileError(f"checkpoint tensor {k} has shape {tuple(v.shape)}, {name} expects {tuple(ours[k].shape)}")
    ours.update(state)
    model.load_state_dict(ours, strict=True)
    if fresh:
        log.info("left %d tensors at their initial values (adapters or head): %s", len(fresh), fresh[:4])
    id2label = hf_config.get("id2label")
    if id2label and len(id2label) == model.num_classes:
        model.labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(model.num_classes)]
    return model.eval()
