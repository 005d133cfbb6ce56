"""Checkpoint save/load and ONNX export: parity with ONNX Runtime at several lengths, metadata, TensorRT ops."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from models import create_model, export_onnx, list_models, load, save  # noqa: E402
from realtime.config import FrontEndConfig, ModelConfig, WindowConfig  # noqa: E402
from realtime.errors import ConfigError  # noqa: E402
from tests.helpers_onnx import assert_tensorrt_ops, ort_session, trt_op_list  # noqa: E402

LENGTHS = (50, 100, 500)  # 0.5 s, 1 s, 5 s


def _check_parity(model, path: Path, lengths=LENGTHS) -> None:
    sess = ort_session(path)
    outputs = [o.name for o in sess.get_outputs()]
    for i, T in enumerate(lengths):
        x = torch.randn(1 + i, T, model.num_mel_bins, generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            scores, frames = model.forward_with_frames(x)
        got = dict(zip(outputs, sess.run(None, {"fbank": x.numpy()})))
        np.testing.assert_allclose(got["scores"], scores.numpy(), atol=1e-4, rtol=0, err_msg=f"T={T}")
        if frames is not None:
            np.testing.assert_allclose(got["frame_scores"], frames.numpy(), atol=1e-4, rtol=0, err_msg=f"T={T}")


def test_trt_op_list_is_sourced():
    ops = trt_op_list()
    assert ops["source"].startswith("https://github.com/onnx/onnx-tensorrt")
    assert ops["tensorrt_version"] and "LayerNormalization" in ops["supported"]
    assert "IsInf" in ops["supported"] and "Unique" in ops["unsupported"]


# ---------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", list_models("*_test"))
def test_save_load_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    labels = [f"c{i}" for i in range(model.num_classes)]
    fe = FrontEndConfig(num_mel_bins=model.num_mel_bins, mean=-1.0, std=3.0)
    save(model, tmp_path, labels=labels, frontend=fe, window=WindowConfig(1.0, 0.2),
         thresholds={"default": 0.4, "per_class": {"c0": 0.3}}, training={"data": "synthetic"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, config = load(tmp_path)
    assert config.name == name and list(config.labels) == labels
    assert config.frontend == fe and config.num_mel_bins == model.num_mel_bins
    assert config.window == WindowConfig(1.0, 0.2)
    assert (config.input.t_min, config.input.t_max) == (model.t_min, model.t_max)
    assert config.output_activation == model.output_activation and dict(config.training) == {"data": "synthetic"}
    x = torch.randn(2, 100, model.num_mel_bins)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_save_load_keeps_kwargs(tmp_path):
    model = create_model("ast_test", attn="diff", adapter="loaa", loaa_axes=["freq", "time"], num_classes=4)
    save(model, tmp_path)
    loaded, config = load(tmp_path)
    assert dict(config.kwargs) == {"attn": "diff", "adapter": "loaa", "loaa_axes": ["freq", "time"], "num_classes": 4}
    assert list(config.labels) == ["class_0", "class_1", "class_2", "class_3"]
    assert config.frontend.num_mel_bins == 64
    assert [b.mlp_adapter.axis for b in loaded.blocks] == ["freq", "time"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path)
    save(create_model("ast_test"), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt weights file"):
        load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt model config"):
        load(tmp_path)


def test_load_rejects_weights_of_another_model(tmp_path):
    save(create_model("ast_test"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["kwargs"] = {"adapter": "aat"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit"):
        load(tmp_path)


def test_save_rejects_wrong_labels_and_unregistered(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        save(create_model("ast_test"), tmp_path, labels=["a"])
    from models.ast import AST
    with pytest.raises(ValueError, match="create_model"):
        save(AST(embed_dim=32, depth=1, num_heads=2, num_mel_bins=64), tmp_path)


# ---------------------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("name", list_models("*_test"))
def test_export_contract(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [("", 17)]
    inp = proto.graph.input[0]
    assert inp.name == "fbank"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "time", model.num_mel_bins]
    assert proto.graph.output[0].name == "scores"
    meta = {p.key: p.value for p in proto.metadata_props}
    config = json.loads(meta["aed_config"])
    assert config["name"] == name and config["frontend"]["num_mel_bins"] == model.num_mel_bins  # stored once
    _check_parity(model, path)
    assert_tensorrt_ops(path)


@pytest.mark.parametrize("attn,adapter", [("mha", None), ("diff", None), ("asda", None), ("mha", "aat"),
                                          ("mha", "loaa"), ("diff", "loaa")])
def test_export_ast_options_parity_at_three_lengths(attn, adapter, tmp_path):
    torch.manual_seed(0)
    model = create_model("ast_test", attn=attn, adapter=adapter).eval()
    if adapter:  # make the adapters do something
        for n, p in model.named_parameters():
            if "adapter.up" in n:
                torch.nn.init.normal_(p, std=0.2)
    path = export_onnx(model, tmp_path / "m.onnx", example_frames=100)  # traced at 100, compared at 50/100/500
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert names == ["scores", "frame_scores"]
    _check_parity(model, path)
    assert_tensorrt_ops(path)
    assert model.blocks[0].attn.fused_attn  # the fused flag is restored after export


def test_export_embeds_given_config_and_keeps_training_mode(tmp_path):
    model = create_model("ast_test").train()
    cfg = {"name": "ast_test", "labels": [f"x{i}" for i in range(10)], "training": {"custom": 1}}
    export_onnx(model, tmp_path / "m.onnx", config=cfg)
    assert model.training
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    embedded = json.loads(meta["aed_config"])
    assert embedded == ModelConfig.from_dict(cfg).to_dict()  # checked and completed, then embedded
    assert embedded["labels"] == cfg["labels"] and embedded["training"] == {"custom": 1}
    with pytest.raises(ConfigError, match="custom"):  # an unknown top-level key is refused, not embedded
        export_onnx(model, tmp_path / "bad.onnx", config={**cfg, "custom": 1})


def test_load_with_fresh_tensors_refuses_a_misshaped_kept_one(tmp_path):
    import models
    from realtime.errors import ModelFileError

    torch.manual_seed(0)
    m = models.create_model("mn_test", num_classes=3)
    models.save(m, tmp_path, labels=["a", "b", "c"])
    loaded, _ = models.load(tmp_path, fresh=("classifier.5.",), num_classes=5)      # a new head: fresh, allowed
    kept = {k: v for k, v in loaded.state_dict().items() if not k.startswith("classifier.5.")}
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in kept.items())
    with pytest.raises(ModelFileError, match="size mismatch for classifier.5"):
        models.load(tmp_path, fresh=("features.0.",), num_classes=5)                 # the head is not fresh here
