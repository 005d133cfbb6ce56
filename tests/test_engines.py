"""Engines: ONNX Runtime / torch parity, errors, TensorRT build logic (without TensorRT), INT8, CLI."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import engines
from engines import MissingDependencyError, ModelFileError, create_engine
from engines.onnx_info import parse_onnx_bytes, read_onnx_info
from engines.trt_build import (
    BuildEnv, GpuInfo, OpTable, ProfileShapes, cache_key, cache_key_fields, check_op_support, ensure_engine,
    make_profile, plan_status, read_plan, stale_reasons, write_plan,
)
from realtime.config import ModelConfig
from tests.helpers_onnx import assert_tensorrt_ops

ROOT = Path(__file__).resolve().parents[1]
F, C = 16, 5
CONFIG = {"name": "tiny_graph", "kwargs": {}, "labels": [f"c{i}" for i in range(C)],
          "frontend": {"num_mel_bins": F, "frame_shift_ms": 10.0}, "window": {"window_s": 1.0, "hop_s": 0.1},
          "output_activation": "sigmoid", "input": {"num_mel_bins": F, "t_min": 50, "t_max": 1024}}


def _has(mod: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def _gpu() -> bool:
    if not _has("torch"):
        return False
    import torch
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- a tiny hand-made ONNX graph
def _tiny_onnx(path: Path, *, config: dict | None = CONFIG, extra_node: tuple[str, str] | None = None,
               opset: int = 17, seed: int = 0) -> tuple[Path, np.ndarray]:
    """fbank (batch, time, F) -> mean over time -> LayerNorm -> MatMul W -> Sigmoid -> scores (batch, C)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((F, C)).astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["fbank"], ["m"], axes=[1], keepdims=0),
             helper.make_node("LayerNormalization", ["m", "g", "b"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["n", "W"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["scores"])]
    if opset >= 18:  # ReduceMean takes axes as an input from opset 18
        nodes[0] = helper.make_node("ReduceMean", ["fbank", "axes"], ["m"], keepdims=0)
    if extra_node is not None:
        domain, op = extra_node
        nodes.append(helper.make_node(op, ["scores"], ["unused"], domain=domain))
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.ones(F, np.float32), "g"),
             numpy_helper.from_array(np.zeros(F, np.float32), "b"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("fbank", TensorProto.FLOAT,
                                                                            ["batch", "time", F])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", C])], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(extra_node[0], 1)]
                                                 if extra_node and extra_node[0] else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="test")
    model.ir_version = 8
    if config is not None:
        model.metadata_props.add(key="aed_config", value=json.dumps(config))
    onnx.save(model, str(path))
    return path, w


def _tiny_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    m = x.mean(axis=1)
    n = (m - m.mean(-1, keepdims=True)) / np.sqrt(m.var(-1, keepdims=True) + 1e-5)
    return 1.0 / (1.0 + np.exp(-(n @ w)))


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, np.ndarray]:
    return _tiny_onnx(tmp_path / "tiny.onnx")


# --------------------------------------------------------------------------- import hygiene
def test_importing_engines_and_commands_pulls_in_no_backend():
    code = ("import sys, engines, engines.trt_build, engines.trt_engine, engines.ort_engine, engines.torch_engine, "
            "engines.quantize, apps.cmd_export, apps.cmd_build_engine; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- ONNX reader
def test_onnx_reader_finds_ops_inputs_and_metadata(tiny):
    info = read_onnx_info(tiny[0])
    assert info.opset == 17
    assert dict(info.ops) == {"ReduceMean": 1, "LayerNormalization": 1, "MatMul": 1, "Sigmoid": 1}
    assert info.inputs == {"fbank": (-1, -1, F)} and info.input_dim_names["fbank"] == ("batch", "time", None)
    assert info.outputs == ["scores"]
    assert json.loads(info.metadata["aed_config"]) == CONFIG


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage" * 10, b"\x0a\xff\xff\xff\xff\x0f"])
def test_onnx_reader_rejects_garbage(data):
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        parse_onnx_bytes(data)


# --------------------------------------------------------------------------- ONNX Runtime engine
def test_onnxruntime_matches_reference_and_reads_config(tiny):
    path, w = tiny
    x = np.random.default_rng(1).standard_normal((3, 100, F)).astype(np.float32)
    with create_engine("onnxruntime", path) as eng:
        assert eng.name == "onnxruntime" and eng.labels == CONFIG["labels"]
        assert eng.config == ModelConfig.from_dict(CONFIG)  # the metadata, read through the one schema
        assert (eng.spec.num_mel_bins, eng.spec.t_min, eng.spec.t_max) == (F, 50, 1024)
        assert eng.providers == ["CPUExecutionProvider"]
        y = eng.infer(x)
    assert y.dtype == np.float32 and y.shape == (3, C)
    np.testing.assert_allclose(y, _tiny_reference(x, w), atol=1e-5)
    with pytest.raises(RuntimeError, match="closed"):
        eng.infer(x)


@pytest.mark.parametrize("shape, match", [
    ((1, 49, F), r"T=49 frames is outside the accepted range \[50, 1024\]"),
    ((1, 1025, F), r"T=1025 frames is outside the accepted range \[50, 1024\]"),
    ((1, 100, F + 1), rf"expected shape \(B, T, {F}\) with 50 <= T <= 1024"),
    ((100, F), rf"expected shape \(B, T, {F}\) with 50 <= T <= 1024"),
    ((9, 100, F), r"batch size 9 is outside the accepted range \[1, 8\]"),
])
def test_bad_shapes_name_the_accepted_range(tiny, shape, match):
    with create_engine("onnxruntime", tiny[0], max_batch=8) as eng:
        with pytest.raises(ValueError, match=match):
            eng.infer(np.zeros(shape, np.float32))


def test_config_json_beside_onnx_without_metadata(tmp_path):
    path, w = _tiny_onnx(tmp_path / "m.onnx", config=None)
    with pytest.raises(ModelFileError, match="no 'aed_config' metadata and no config.json"):
        create_engine("onnxruntime", path)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with create_engine("onnxruntime", path) as eng:
        assert eng.labels == CONFIG["labels"]


def test_checkpoint_without_onnx_says_how_to_export(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(ModelFileError, match="aed export"):
        create_engine("onnxruntime", tmp_path)


@pytest.mark.parametrize("content", [b"this is not a model", b"\x08\x07\x12\x03abc" + bytes(range(256))])
def test_corrupt_onnx_gives_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelFileError, match="onnxruntime cannot load .*bad.onnx"):
        create_engine("onnxruntime", bad)


def test_missing_path_and_unknown_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_engine("onnxruntime", tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="unknown engine 'tflite'"):
        create_engine("tflite", tmp_path)


def test_missing_onnxruntime_gives_the_documented_error(tiny):
    with mock.patch.dict(sys.modules, {"onnxruntime": None}):
        with pytest.raises(MissingDependencyError, match=r"onnxruntime engine needs the 'onnxruntime' package.*"
                                                         r"pip install"):
            create_engine("onnxruntime", tiny[0])


def test_missing_tensorrt_gives_the_documented_error(tiny):
    with mock.patch.dict(sys.modules, {"tensorrt": None}):
        with pytest.raises(MissingDependencyError,
                           match=r"needs the 'tensorrt' package.*pip install 'aed\[tensorrt\]'"):
            create_engine("tensorrt", tiny[0])


def test_missing_torch_gives_the_documented_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with mock.patch.dict(sys.modules, {"torch": None}):
        with pytest.raises(MissingDependencyError, match=r"pip install 'aed\[torch\]'"):
            create_engine("torch", tmp_path)


def test_auto_picks_onnxruntime_here(tiny, caplog):
    if "tensorrt" in engines.available_engines():
        pytest.skip("TensorRT and a GPU are present: auto picks TensorRT on this machine")
    with caplog.at_level(logging.INFO, logger="engines"):
        with create_engine("auto", tiny[0], threads=1) as eng:
            assert eng.name == "onnxruntime"
    assert "engine 'auto' chose onnxruntime" in caplog.text
    assert "onnxruntime" in engines.available_engines()


def test_default_model_path_finds_the_shipped_model_and_explains_when_absent(monkeypatch):
    path = engines.default_model_path()  # the project ships one: not finding it is a failure
    assert path.name == "aed_default"
    assert all((path / f).is_file() for f in ("config.json", "model.safetensors", "model.onnx", "ATTRIBUTION.md"))
    from engines import assets

    monkeypatch.setattr(assets, "DEFAULT_MODEL_NAME", "no_such_model")
    with pytest.raises(FileNotFoundError, match="no trained default model") as err:
        engines.default_model_path()
    assert "--model PATH" in str(err.value) and "no_such_model" in str(err.value)


# --------------------------------------------------------------------------- TensorRT build logic (no TensorRT)
ENV = BuildEnv("10.9.0.34", GpuInfo("NVIDIA H100 80GB HBM3", "9.0"))


def test_profile_shapes_from_model_range_with_opt_at_window():
    p = make_profile(CONFIG)
    assert (p.input_name, p.min, p.opt, p.max) == ("fbank", (1, 50, F), (1, 100, F), (32, 1024, F))
    p = make_profile(CONFIG, window_s=2.0, min_window_s=0.5, max_window_s=4.0, max_batch=8, opt_batch=4)
    assert (p.min, p.opt, p.max) == ((1, 50, F), (4, 200, F), (8, 400, F))
    assert ProfileShapes.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("kw, match", [
    ({"window_s": 20.0}, r"--window of 20 s = 2000 frames is outside the model's accepted range \[0.5, 10.24\] s"),
    ({"min_window_s": 0.2}, r"--min-window .* \(50..1024 frames\)"),
    ({"min_window_s": 2.0, "window_s": 1.0}, r"min window <= window <= max window"),
    ({"max_batch": 4, "opt_batch": 8}, r"1 <= opt batch <= max batch"),
])
def test_profile_rejects_windows_outside_the_model_range(kw, match):
    with pytest.raises(ValueError, match=match):
        make_profile(CONFIG, **kw)


def test_cache_key_changes_with_every_ingredient():
    prof = make_profile(CONFIG)
    base = cache_key(cache_key_fields("a" * 64, ENV, "fp16", prof))
    assert base == cache_key(cache_key_fields("a" * 64, ENV, "fp16", make_profile(CONFIG)))
    variants = [
        cache_key_fields("b" * 64, ENV, "fp16", prof),                                                 # another ONNX
        cache_key_fields("a" * 64, BuildEnv("10.8.0.43", ENV.gpu), "fp16", prof),                       # TensorRT
        cache_key_fields("a" * 64, BuildEnv(ENV.trt_version, GpuInfo("NVIDIA A100", "8.0")), "fp16", prof),  # GPU
        cache_key_fields("a" * 64, BuildEnv(ENV.trt_version, GpuInfo(ENV.gpu.name, "9.1")), "fp16", prof),  # sm
        cache_key_fields("a" * 64, ENV, "fp32", prof),                                                 # precision
        cache_key_fields("a" * 64, ENV, "fp16", make_profile(CONFIG, max_batch=64)),                   # profile
    ]
    keys = {cache_key(v) for v in variants}
    assert len(keys) == len(variants) and base not in keys
    with pytest.raises(ValueError, match="precision must be one of"):
        cache_key_fields("a" * 64, ENV, "int4", prof)


class FakeBuilder:
    """Stands in for TensorRT's builder: records builds and returns recognisable bytes."""

    def __init__(self):
        self.calls: list[tuple[str, ProfileShapes, str]] = []

    def __call__(self, onnx_path, profile, precision, timing_cache):
        self.calls.append((Path(onnx_path).name, profile, precision))
        return f"engine#{len(self.calls)}:{precision}".encode()


def test_engine_cache_reuses_and_invalidates(tmp_path):
    onnx_path, _ = _tiny_onnx(tmp_path / "m.onnx")
    build = FakeBuilder()
    kw = dict(cache_dir=tmp_path / "cache", build=build, check_ops=False)
    first = ensure_engine(onnx_path, env=ENV, **kw)
    assert len(build.calls) == 1 and first.parent == tmp_path / "cache"
    assert ensure_engine(onnx_path, env=ENV, **kw) == first and len(build.calls) == 1       # cached
    header, blob = read_plan(first)
    assert blob == b"engine#1:fp32" and header["config"] == ModelConfig.from_dict(CONFIG).to_dict()
    assert header["key_fields"]["tensorrt"] == ENV.trt_version

    for env, precision in [(BuildEnv("10.10.0.1", ENV.gpu), "fp32"),                               # TRT upgrade
                           (BuildEnv(ENV.trt_version, GpuInfo("NVIDIA L4", "8.9")), "fp32"),       # another GPU
                           (ENV, "fp16")]:                                                          # precision
        n = len(build.calls)
        other = ensure_engine(onnx_path, env=env, precision=precision, **kw)
        assert len(build.calls) == n + 1 and other != first
    n = len(build.calls)
    _tiny_onnx(onnx_path, seed=1)                                                                   # changed ONNX
    assert ensure_engine(onnx_path, env=ENV, **kw) != first and len(build.calls) == n + 1
    assert ensure_engine(onnx_path, env=ENV, rebuild=True, **kw) and len(build.calls) == n + 2      # forced


def test_plan_at_fixed_path_with_another_key_is_rebuilt(tmp_path):
    onnx_path, _ = _tiny_onnx(tmp_path / "m.onnx")
    plan = tmp_path / "model.plan"
    build = FakeBuilder()
    ensure_engine(onnx_path, plan, env=ENV, build=build, check_ops=False, cache_dir=tmp_path)
    key1 = read_plan(plan)[0]["key"]
    foreign = BuildEnv(ENV.trt_version, GpuInfo("NVIDIA GeForce RTX 4090", "8.9"))
    ok, why = plan_status(plan, cache_key(cache_key_fields("0" * 64, foreign, "fp32", make_profile(CONFIG))))
    assert not ok and "stale engine" in why
    ensure_engine(onnx_path, plan, env=foreign, build=build, check_ops=False, cache_dir=tmp_path)
    header = read_plan(plan)[0]
    assert len(build.calls) == 2 and header["key"] != key1 and header["key_fields"]["gpu"] == foreign.gpu.name
    assert stale_reasons(header, foreign) == []
    reasons = stale_reasons(header, ENV)
    assert len(reasons) == 1 and "GPU NVIDIA GeForce RTX 4090 sm 8.9 (this machine has NVIDIA H100" in reasons[0]
    assert stale_reasons(header, BuildEnv("10.0.0", foreign.gpu)) == ["TensorRT 10.9.0.34 (this machine has 10.0.0)"]
    # a truncated plan is rebuilt too
    plan.write_bytes(plan.read_bytes()[:-3])
    ensure_engine(onnx_path, plan, env=foreign, build=build, check_ops=False, cache_dir=tmp_path)
    assert len(build.calls) == 3 and read_plan(plan)[1] == b"engine#3:fp32"


@pytest.mark.parametrize("content, match", [
    (b"\x00" * 64 + b"raw trtexec engine bytes", "not an aed TensorRT plan"),
    (b"AEDPLAN\x01\xff", "truncated"),
    (b"AEDPLAN\x01\x05\x00\x00\x00{nope", "corrupt header"),
])
def test_foreign_or_corrupt_plan_is_refused(tmp_path, content, match):
    bad = tmp_path / "bad.plan"
    bad.write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        read_plan(bad)
    assert not plan_status(bad, "any")[0]


def test_tampered_plan_fails_its_checksum(tmp_path):
    plan = tmp_path / "m.plan"
    write_plan(plan, b"0123456789", {"key": "k", "key_fields": {}, "config": CONFIG})
    assert read_plan(plan)[1] == b"0123456789"
    plan.write_bytes(plan.read_bytes()[:-1] + b"X")
    with pytest.raises(ModelFileError, match="do not match their checksum"):
        read_plan(plan)


def test_op_support_check(tmp_path):
    supported = {"ReduceMean", "LayerNormalization", "MatMul", "Sigmoid"}
    good, _ = _tiny_onnx(tmp_path / "good.onnx")
    report = check_op_support(good, supported)
    assert report.ok and report.opset == 17 and "supported" in report.summary()
    ms, _ = _tiny_onnx(tmp_path / "ms.onnx", extra_node=("com.microsoft", "FusedGemm"))
    report = check_op_support(ms, supported)
    assert not report.ok and report.unsupported == {"com.microsoft::FusedGemm": 1}
    assert "com.microsoft::FusedGemm (x1)" in report.summary()
    report = check_op_support(good, supported - {"LayerNormalization"})
    assert report.unsupported == {"LayerNormalization": 1}


def test_op_table_opset_range_and_restrictions(tmp_path):
    table = OpTable(frozenset({"ReduceMean", "LayerNormalization", "MatMul", "Sigmoid"}), (9, 17),
                    {"ReduceMean": "`axes` must be an initializer"}, "10.15")
    path, _ = _tiny_onnx(tmp_path / "m18.onnx", opset=18)
    report = check_op_support(path, table)
    assert not report.ok and "opset 18 is outside the range TensorRT 10.15 imports (9..17)" in report.summary()
    assert report.notes == ["ReduceMean: `axes` must be an initializer"]


def test_op_support_flags_grid_sample_at_opset_20(tmp_path):
    path, _ = _tiny_onnx(tmp_path / "gs.onnx", extra_node=("", "GridSample"), opset=20)
    report = check_op_support(path, {"ReduceMean", "LayerNormalization", "MatMul", "Sigmoid", "GridSample"})
    assert not report.ok and not report.unsupported and "GridSample at opset 20" in report.summary()


def test_op_check_refuses_build_before_tensorrt(tmp_path):
    ms, _ = _tiny_onnx(tmp_path / "ms.onnx", extra_node=("com.microsoft", "FusedGemm"))
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps(["ReduceMean", "LayerNormalization", "MatMul", "Sigmoid"]))
    with mock.patch("engines.trt_ops.load_op_table",
                    lambda path=None: OpTable(frozenset(json.loads(ops.read_text())))):
        with pytest.raises(ModelFileError, match="cannot be built with TensorRT: .*FusedGemm"):
            ensure_engine(ms, tmp_path / "x.plan", env=ENV, build=FakeBuilder(), cache_dir=tmp_path)


# --------------------------------------------------------------------------- aed build-engine
def _cli(argv):
    cli = pytest.importorskip("apps.cli")
    return cli.main(argv)


def test_cli_build_engine_without_tensorrt(tiny, tmp_path, capsys):
    with mock.patch.dict(sys.modules, {"tensorrt": None}):
        rc = _cli(["build-engine", str(tiny[0]), "-o", str(tmp_path / "m.plan")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "pip install 'aed[tensorrt]'" in err
    assert not (tmp_path / "m.plan").exists()


def test_cli_build_engine_rejects_bad_window(tiny, tmp_path, capsys):
    rc = _cli(["build-engine", str(tiny[0]), "-o", str(tmp_path / "m.plan"), "--window", "30"])
    err = capsys.readouterr().err
    assert rc == 2 and "outside the model's accepted range [0.5, 10.24] s" in err


def test_cli_build_engine_check_only(tiny, capsys):
    with mock.patch("engines.trt_ops.load_op_table",
                    lambda path=None: OpTable(frozenset({"ReduceMean", "LayerNormalization", "MatMul", "Sigmoid"}))):
        rc = _cli(["build-engine", str(tiny[0]), "--check-only"])
    assert rc == 0 and "supported by TensorRT's ONNX parser" in capsys.readouterr().out


# --------------------------------------------------------------------------- real models: export, parity, INT8
TEST_VARIANTS = ["ast_test", "datar_test"]


@pytest.fixture(scope="module", params=TEST_VARIANTS)
def exported(request, tmp_path_factory):
    """``aed export NAME -o NAME.onnx --checkpoint DIR --int8`` for each ``*_test`` variant."""
    pytest.importorskip("torch")
    models = pytest.importorskip("models")
    assert models.is_model(request.param), f"{request.param} is not registered"
    d = tmp_path_factory.mktemp(request.param)
    rc = _cli(["export", request.param, "-o", str(d / "model.onnx"), "--checkpoint", str(d / "ckpt"), "--int8",
               "--no-verify"])
    assert rc == 0
    return request.param, d


def test_export_writes_onnx_with_config_and_int8(exported):
    name, d = exported
    info = read_onnx_info(d / "model.onnx")
    config = json.loads(info.metadata["aed_config"])
    assert info.opset == 17 and config["name"] == name and list(info.inputs) == ["fbank"]
    assert info.inputs["fbank"][:2] == (-1, -1) and info.outputs[0] == "scores"
    assert config == json.loads((d / "ckpt" / "config.json").read_text())
    qinfo = read_onnx_info(d / "model.int8.onnx")
    assert json.loads(qinfo.metadata["aed_config"]) == config and qinfo.metadata["aed_quantization"] == "int8-dynamic"
    assert any(op.endswith(("MatMulInteger", "DynamicQuantizeLinear")) for op in qinfo.ops)


def test_torch_and_onnxruntime_agree_at_three_lengths(exported):
    name, d = exported
    with create_engine("torch", d / "ckpt", device="cpu") as pt, create_engine("onnxruntime", d / "model.onnx") as rt:
        assert pt.labels == rt.labels and pt.spec == rt.spec
        s = rt.spec
        rng = np.random.default_rng(0)
        for t in (s.t_min, 100, min(s.t_max, 317)):   # shortest, the 1 s window, an odd longer one
            x = rng.standard_normal((2, t, s.num_mel_bins)).astype(np.float32)
            a, b = pt.infer(x), rt.infer(x)
            assert a.shape == b.shape == (2, len(rt.labels))
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=f"{name} at T={t}")


def test_checkpoint_dir_with_model_onnx_runs_on_onnxruntime(exported, tmp_path):
    import shutil
    _, d = exported
    ckpt = tmp_path / "ckpt"
    shutil.copytree(d / "ckpt", ckpt)
    shutil.copy(d / "model.onnx", ckpt / "model.onnx")
    with create_engine("onnxruntime", ckpt) as eng:
        assert eng.infer(np.zeros((1, 100, eng.spec.num_mel_bins), np.float32)).shape == (1, len(eng.labels))


def test_int8_model_runs_and_reports_its_deviation(exported, record_property):
    name, d = exported
    with create_engine("onnxruntime", d / "model.onnx") as fp, create_engine("onnxruntime", d / "model.int8.onnx") as q:
        assert q.labels == fp.labels
        x = np.random.default_rng(2).standard_normal((4, 100, fp.spec.num_mel_bins)).astype(np.float32)
        a, b = fp.infer(x), q.infer(x)
    dev = float(np.abs(a - b).max())
    record_property(f"int8_max_score_deviation_{name}", dev)
    print(f"INT8 max |score deviation| for {name}: {dev:.2e}")
    assert np.isfinite(b).all() and ((b >= 0) & (b <= 1)).all()
    assert 0.0 < dev < 0.05  # quantised (not bit-identical), yet close on these untrained weights


def test_torch_engine_needs_a_checkpoint(exported):
    _, d = exported
    with pytest.raises(ModelFileError, match="torch engine needs a checkpoint directory"):
        create_engine("torch", d / "model.onnx")


def test_torch_engine_rejects_cuda_options_on_cpu(exported):
    _, d = exported
    with pytest.raises(ValueError, match="need a CUDA device"):
        create_engine("torch", d / "ckpt", device="cpu", precision="fp16")


def test_exported_models_pass_the_tensorrt_op_check(exported):
    _, d = exported
    assert_tensorrt_ops(d / "model.onnx")
    # the INT8 model's integer ops are not TensorRT ops: the check says so before any build
    q = check_op_support(d / "model.int8.onnx")
    assert not q.ok and "MatMulInteger" in q.unsupported


def test_cli_export_rejects_unknown_model(tmp_path, capsys):
    pytest.importorskip("torch")
    rc = _cli(["export", "no_such_model", "-o", str(tmp_path / "m.onnx")])
    assert rc == 2 and "neither a checkpoint directory nor a registered model" in capsys.readouterr().err


# --------------------------------------------------------------------------- GPU paths (skipped here)
@pytest.mark.gpu
@pytest.mark.parametrize("precision, mode, tol", [("fp32", "eager", 1e-4), ("fp16", "eager", 2e-2),
                                                  ("fp16", "cuda_graph", 2e-2)])
def test_torch_cuda_matches_cpu(exported, precision, mode, tol):
    if not _gpu():
        pytest.skip("no CUDA GPU visible (none is lent to this machine)")
    _, d = exported
    with create_engine("torch", d / "ckpt", device="cpu") as cpu, \
            create_engine("torch", d / "ckpt", device="cuda", precision=precision, mode=mode) as gpu:
        x = np.random.default_rng(3).standard_normal((4, 100, cpu.spec.num_mel_bins)).astype(np.float32)
        ref = cpu.infer(x)
        for _ in range(2):  # the second call replays the captured graph
            np.testing.assert_allclose(gpu.infer(x), ref, atol=tol, rtol=0)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_tensorrt_matches_onnxruntime(exported, tmp_path, precision, tol):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'aed[tensorrt]')")
    if not engines.gpu_available():
        pytest.skip("no CUDA GPU visible (none is lent to this machine)")
    _, d = exported
    with create_engine("onnxruntime", d / "model.onnx") as rt, \
            create_engine("tensorrt", d / "model.onnx", precision=precision, cache_dir=tmp_path, max_batch=4) as trt:
        assert trt.spec.max_batch == 4
        for t in (rt.spec.t_min, 100, 317):
            x = np.random.default_rng(t).standard_normal((3, t, rt.spec.num_mel_bins)).astype(np.float32)
            np.testing.assert_allclose(trt.infer(x), rt.infer(x), atol=tol, rtol=0)
        with pytest.raises(ValueError, match=r"batch size 5 is outside the accepted range \[1, 4\]"):
            trt.infer(np.zeros((5, 100, rt.spec.num_mel_bins), np.float32))
        plan = trt.plan_path
    with create_engine("tensorrt", plan) as again:  # the cached plan loads directly
        assert again.precision == precision
