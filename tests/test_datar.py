"""DATAR and its deformable attention: shapes, input checks, gradients, offsets, reference-grid reduction, export."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

import models
from models.datar import DATAR, InputAdaptor, datar_test
from models.layers.attention import DiffAttention, diff_head_dim, diff_lambda, lambda_init_fn
from models.layers.deformable import DeformableAttention2d
from tests.helpers_onnx import assert_tensorrt_ops, ort_session

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _frames(t: int) -> int:
    for _ in range(5):  # stem (2 halvings) + 3 downsamplings, each ceil(n / 2)
        t = math.ceil(t / 2)
    return t


# the small registered variants that every parametrised check runs on (datar_tiny/small are checked for budget only)
VARIANTS = ["datar_test", "datar_nano"]


def _model(name: str = "datar_test", **kw) -> DATAR:
    torch.manual_seed(0)
    kw.setdefault("num_classes", 10)
    return models.create_model(name, **kw).eval()


# ----------------------------------------------------------------------------------------------- shapes and input
@pytest.mark.parametrize("kw", [{}, {"diff": True}, {"attn": "standard"}, {"attn": "standard", "diff": True},
                                {"input_adaptor": False}],
                         ids=["deform", "deform-diff", "mhsa", "mhsa-diff", "no-adaptor"])
@pytest.mark.parametrize("T", [50, 333])
@pytest.mark.parametrize("name", VARIANTS)
def test_forward_shapes_and_finite(name: str, kw: dict, T: int) -> None:
    model = _model(name, **kw)
    with torch.no_grad():
        scores, frames = model.forward_with_frames(torch.randn(2, T, 64))
    assert scores.shape == (2, 10)
    assert frames.shape == (2, _frames(T), 10) and model.output_frames(T) == _frames(T)
    assert torch.isfinite(scores).all() and torch.isfinite(frames).all()
    assert ((scores >= 0) & (scores <= 1)).all()


def test_every_length_in_range_without_padding() -> None:
    model = _model()
    x = torch.randn(1, 1000, 64)
    with torch.no_grad():
        for T in (50, 51, 64, 99, 100, 257, 999, 1000):
            clip, frames = model.forward_logits(x[:, :T])
            assert frames.shape[1] == _frames(T)
            assert torch.isfinite(clip).all()


def test_batch_items_are_independent() -> None:
    model = _model(diff=True)
    x = torch.randn(3, 120, 64)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(100, 64), (1, 1, 100, 64), (1, 100, 128), (1, 49, 64), (1, 1001, 64)],
                         ids=["rank2", "rank4", "wrong-F", "T-short", "T-long"])
def test_bad_input_names_accepted_shape(shape: tuple[int, ...]) -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"\(B, T, 64\)"):
        model(torch.zeros(shape))


def test_softmax_output_and_bad_options() -> None:
    model = _model(output_activation="softmax")
    with torch.no_grad():
        s = model(torch.randn(2, 80, 64))
    torch.testing.assert_close(s.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="deformable"):
        datar_test(attn="window")
    with pytest.raises(ValueError, match="4 stages"):
        datar_test(dims=(16, 32, 64))
    with pytest.raises(ValueError, match="output_activation"):
        datar_test(output_activation="relu")


def test_ablation_switches() -> None:
    plain = datar_test(attn="standard", input_adaptor=False)
    assert not any(isinstance(m, (DeformableAttention2d, InputAdaptor)) for m in plain.modules())
    full = datar_test()
    assert sum(isinstance(m, DeformableAttention2d) for m in full.modules()) == 4  # one block per stage
    assert isinstance(full.input_adaptor, InputAdaptor) and abs(full.input_adaptor.scale.item() - 0.01) < 1e-9
    assert [m.kv_stride for m in full.modules() if isinstance(m, DeformableAttention2d)] == [
        (8, 8), (4, 4), (2, 2), (1, 1)]


@pytest.mark.parametrize("name, max_params, max_macs",
                         [("datar_tiny", 6_000_000, 150e6), ("datar_nano", 1_500_000, 40e6)])
def test_registry_variants_budget(name: str, max_params: int, max_macs: float) -> None:
    assert {"datar_tiny", "datar_small", "datar_nano", "datar_test"} <= set(models.list_models("datar_*"))
    model = models.create_model(name).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params <= max_params
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 100, 64))
    macs = counter.get_total_flops() / 2
    assert macs <= max_macs, f"{name}: {macs / 1e6:.1f} MMACs on (1, 100, 64)"


def test_stage_computes_size_grids_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(depths=(1, 3, 2, 1))
    x = torch.randn(1, 120, 64)
    with torch.no_grad():
        ref = model(x)
    calls = []
    original = DeformableAttention2d.size_grids

    def counting(self: DeformableAttention2d, t: torch.Tensor):
        calls.append(tuple(t.shape[2:]))
        return original(self, t)

    monkeypatch.setattr(DeformableAttention2d, "size_grids", counting)
    with torch.no_grad():
        shared = model(x)
    assert len(calls) == 4  # once per stage, not once per block (7 blocks)
    torch.testing.assert_close(shared, ref, atol=0, rtol=0)
    with torch.no_grad():  # a block run alone (no cache) gives the same result as inside its stage
        feats = model.stem(model.input_adaptor(x.transpose(1, 2).unsqueeze(1)))
        torch.testing.assert_close(model.stages[0][0](feats), model.stages[0](feats), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- training signals
def test_gradients_reach_offset_network_and_adaptor() -> None:
    torch.manual_seed(0)
    model = datar_test(diff=True).train()
    clip, frames = model.forward_logits(torch.randn(2, 90, 64))
    (clip.square().mean() + frames.square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    deform = [m for m in model.modules() if isinstance(m, DeformableAttention2d)]
    for layer in deform:
        for name, p in layer.conv_offset.named_parameters():
            assert p.grad.abs().sum() > 0, f"offset network parameter {name} has a zero gradient"
    for name, p in model.input_adaptor.named_parameters():
        assert p.grad.abs().sum() > 0, f"input adaptor parameter {name} has a zero gradient"


class _GridSampleRecorder(TorchFunctionMode):
    """Records the ``(input, grid)`` of every ``F.grid_sample`` call: the sampling points a deformable layer uses."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is torch.nn.functional.grid_sample:
            self.calls.append((tuple(args[0].shape), args[1].detach().clone()))
        return func(*args, **kwargs)


def _offsets_seen(layer: DeformableAttention2d, shape: tuple[int, ...], grid: torch.Tensor) -> torch.Tensor:
    """Offsets of the sampling points from their reference points, in reference spacings: ``(B*G, Hk, Wk, 2)``.

    Read back from the ``grid`` that ``forward`` handed ``grid_sample`` (``(B*G, 1, Nk, 2)``, (time, freq) in
    ``[-1, 1]`` with ``align_corners=True``) on an input map of ``shape`` ``(B*G, C/G, H, W)``.
    """
    H, W = shape[2], shape[3]
    sf, st = layer.kv_stride
    Hk, Wk = math.ceil(H / sf), math.ceil(W / st)
    pos = (grid.reshape(-1, Hk, Wk, 2) + 1.0) / 2.0 * torch.tensor([max(W - 1, 1), max(H - 1, 1)])  # pixels
    ref_t, ref_f = torch.meshgrid(torch.arange(Wk) * st * 1.0, torch.arange(Hk) * sf * 1.0, indexing="xy")
    ref = torch.stack([ref_t, ref_f], dim=-1)  # (Hk, Wk, 2), (time, freq)
    return (pos - ref) / torch.tensor([float(st), float(sf)])


def test_offsets_stay_inside_range_factor() -> None:
    torch.manual_seed(0)
    layer = DeformableAttention2d(32, num_heads=4, num_groups=2, kv_stride=(2, 3), offset_range=1.5).eval()
    with torch.no_grad():
        layer.conv_offset[-1].weight.mul_(100.0)  # the offset net ends in LayerNorm -> GELU -> 1x1: saturate tanh
    recorder = _GridSampleRecorder()
    with torch.no_grad(), recorder:
        layer(torch.randn(2, 32, 9, 40))
    assert len(recorder.calls) == 1
    shape, grid = recorder.calls[0]
    assert shape == (4, 16, 9, 40) and grid.shape == (4, 1, 5 * 14, 2)  # (B*G, 1, ceil(9/2) * ceil(40/3), 2)
    offsets = _offsets_seen(layer, shape, grid)
    assert offsets.abs().max() <= 1.5 + 1e-4
    assert offsets.abs().max() > 1.4  # the bound is actually reached, so the check has teeth
    assert (offsets[..., 0].abs() > 1.4).any() and (offsets[..., 1].abs() > 1.4).any()  # both axes move
    # in pixels: a point never leaves range x stride of its reference, whatever the map size
    pixels = offsets * torch.tensor([3.0, 2.0])
    assert pixels[..., 0].abs().max() <= 1.5 * 3 + 1e-4 and pixels[..., 1].abs().max() <= 1.5 * 2 + 1e-4

    # the same bound in the full model, on every deformable layer
    model = _model()
    layers = [m for m in model.modules() if isinstance(m, DeformableAttention2d)]
    with torch.no_grad():
        for m in layers:
            m.conv_offset[-1].weight.mul_(100.0)
    recorder = _GridSampleRecorder()
    with torch.no_grad(), recorder:
        model(torch.randn(1, 200, 64))
    assert len(recorder.calls) == len(layers) == 4  # one grid_sample per deformable layer, in order
    for m, (shape, grid) in zip(layers, recorder.calls):
        largest = _offsets_seen(m, shape, grid).abs().max().item()
        assert 0.9 * m.offset_range < largest <= m.offset_range + 1e-4, (m.kv_stride, largest)


# ----------------------------------------------------------------------------------------------- reference grid
def _plain_reference_attention(layer: DeformableAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Attention over the uniform grid x[:, :, ::s_f, ::s_t], written without grid_sample.

    ``m`` softmax maps of width ``d``: one per head, or (``diff``) two per differential head, ``d = C / (2 heads)``.
    """
    B, C, H, W = x.shape
    sf, st = layer.kv_stride
    G, h = layer.num_groups, layer.num_heads
    m = 2 * h if layer.diff else h
    d = C // m
    kv = x[:, :, ::sf, ::st]
    Hk, Wk = kv.shape[2], kv.shape[3]
    q = layer.proj_q(x).reshape(B, m, d, H * W).transpose(2, 3)  # (B, m, Nq, d)
    k = layer.proj_k(kv).reshape(B, m, d, Hk * Wk).transpose(2, 3)  # (B, m, Nk, d)
    v_flat = layer.proj_v(kv).reshape(B, C, Hk * Wk)
    # bias at (query - reference point), in pixels, per head: frequency term + time term
    qy, qx = torch.meshgrid(torch.arange(H * 1.0), torch.arange(W * 1.0), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(Hk) * sf * 1.0, torch.arange(Wk) * st * 1.0, indexing="ij")
    dy = (qy.reshape(-1, 1) - ky.reshape(1, -1)).unsqueeze(-1)  # (Nq, Nk, 1)
    dx = (qx.reshape(-1, 1) - kx.reshape(1, -1)).unsqueeze(-1)
    bias = (layer.rpb_f(torch.sign(dy) * torch.log2(1 + dy.abs()) / 3)
            + layer.rpb_t(torch.sign(dx) * torch.log2(1 + dx.abs()) / 3))
    bias = bias.permute(2, 0, 1)  # (m/G, Nq, Nk), the same for every group (same reference grid)
    bias = bias.repeat(G, 1, 1).unsqueeze(0)  # (1, m, Nq, Nk)
    if not layer.diff:
        v = v_flat.reshape(B, m, d, -1).transpose(2, 3)
        attn = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d) + bias, dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(B, C, H, W)
    else:
        lam = (math.exp(float(layer.lambda_q1 @ layer.lambda_k1)) - math.exp(float(layer.lambda_q2 @ layer.lambda_k2))
               + lambda_init_fn(0))
        outs = []
        for j in range(h):  # differential head j: maps 2j and 2j + 1, value channels [2jd, (2j + 2)d)
            a1 = torch.softmax(q[:, 2 * j] @ k[:, 2 * j].transpose(1, 2) / math.sqrt(d) + bias[:, 2 * j], -1)
            a2 = torch.softmax(q[:, 2 * j + 1] @ k[:, 2 * j + 1].transpose(1, 2) / math.sqrt(d)
                               + bias[:, 2 * j + 1], -1)
            v = v_flat[:, 2 * j * d:(2 * j + 2) * d].transpose(1, 2)  # (B, Nk, 2d)
            o = (a1 - lam * a2) @ v
            o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.head_norm.weight
            outs.append(o * (1 - lambda_init_fn(0)))
        out = torch.cat(outs, dim=-1).transpose(1, 2).reshape(B, C, H, W)
    return layer.proj_out(out)


@pytest.mark.parametrize("diff", [False, True], ids=["softmax", "diff"])
def test_zero_offsets_reduce_to_uniform_reference_grid(diff: bool) -> None:
    torch.manual_seed(0)
    layer = DeformableAttention2d(32, num_heads=4, num_groups=2, kv_stride=(2, 3), diff=diff).eval()
    x = torch.randn(2, 32, 7, 13)
    with torch.no_grad():
        moved = layer(x)
        layer.conv_offset[-1].weight.zero_()  # offsets = tanh(0) * range = 0
        zero = layer(x)
        plain = _plain_reference_attention(layer, x)
    torch.testing.assert_close(zero, plain, atol=2e-5, rtol=1e-4)
    assert (moved - plain).abs().max() > 1e-3  # learned offsets do change the result


@pytest.mark.parametrize("diff", [False, True], ids=["softmax", "diff"])
def test_fused_attention_equals_plain(diff: bool) -> None:
    torch.manual_seed(0)
    layer = DeformableAttention2d(32, num_heads=4, num_groups=2, kv_stride=2, diff=diff).eval()
    x = torch.randn(2, 32, 8, 21)
    with torch.no_grad():
        plain = layer(x)
        layer.fused_attn = True
        fused = layer(x)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("depth", [0, 3])
def test_differential_attention_one_lambda_and_one_head_convention(depth: int) -> None:
    torch.manual_seed(0)
    flat = DiffAttention(32, num_heads=2, depth=depth, fused_attn=False).eval()  # attn='diff' of AST and DATAR
    deform = DeformableAttention2d(32, num_heads=2, kv_stride=1, diff=True, depth=depth, rpb_hidden=0).eval()
    # one head convention: 2 heads of two 8-wide softmax maps each, 16-wide values, the same lambda vectors
    assert flat.head_dim == deform.head_dim == diff_head_dim(32, 2) == 8 and deform.num_maps == 4
    assert flat.norm.weight.shape == deform.head_norm.weight.shape == (16,)
    names = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")
    assert [getattr(flat, n).shape for n in names] == [getattr(deform, n).shape for n in names] == [(8,)] * 4
    assert flat.lambda_init == deform.lambda_init == pytest.approx(lambda_init_fn(depth))
    # one lambda helper: the same vectors give the same lambda in both, the Diff-Transformer formula
    with torch.no_grad():
        for n in names:
            getattr(deform, n).copy_(getattr(flat, n))
    q1, k1, q2, k2 = (getattr(flat, n).detach().double() for n in names)
    expected = math.exp(float(q1 @ k1)) - math.exp(float(q2 @ k2)) + lambda_init_fn(depth)
    assert float(flat.lambda_value().detach()) == pytest.approx(expected, rel=1e-6)
    assert torch.equal(flat.lambda_value(), deform.lambda_value())
    assert torch.equal(deform.lambda_value(), diff_lambda(*(getattr(deform, n) for n in names), deform.lambda_init))

    # the same heads: unmoved stride-1 sampling points (every pixel) and the same projections make the deformable
    # layer the flat one over the H*W tokens
    D = 32
    with torch.no_grad():
        deform.conv_offset[-1].weight.zero_()
        for i, conv in enumerate((deform.proj_q, deform.proj_k, deform.proj_v)):
            conv.weight.copy_(flat.qkv.weight[i * D:(i + 1) * D].reshape(D, D, 1, 1))
            conv.bias.copy_(flat.qkv.bias[i * D:(i + 1) * D])
        deform.proj_out.weight.copy_(flat.proj.weight.reshape(D, D, 1, 1))
        deform.proj_out.bias.copy_(flat.proj.bias)
        deform.head_norm.weight.copy_(torch.rand(16) + 0.5)
        flat.norm.weight.copy_(deform.head_norm.weight)
        x = torch.randn(2, D, 3, 5)
        ours = deform(x)
        ref = flat(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape_as(x)  # (B, C, H, W) <-> (B, H*W, C)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_datar_diff_blocks_have_the_heads_of_attn_diff() -> None:
    from models.datar import DATARBlock

    deform = DATARBlock(32, 2, attn="deformable", diff=True, depth=1).attn
    standard = DATARBlock(32, 2, attn="standard", diff=True, depth=1).attn
    assert isinstance(standard, DiffAttention)
    assert deform.num_heads == standard.num_heads == 2 and deform.head_dim == standard.head_dim == 8
    assert deform.lambda_q1.shape == standard.lambda_q1.shape and deform.lambda_init == standard.lambda_init
    DeformableAttention2d(48, num_heads=3, num_groups=3, diff=True)  # one head per group: no pairing needed any more
    with pytest.raises(ValueError, match="2 \\* num_heads dividing dim"):
        DeformableAttention2d(36, num_heads=4, diff=True)


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (3, 1)])
def test_tiny_feature_maps(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    layer = DeformableAttention2d(16, num_heads=2, kv_stride=8, diff=True)
    x = torch.randn(2, 16, *hw, requires_grad=True)
    y = layer(x)
    y.square().sum().backward()
    assert y.shape == x.shape and torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    # 32 mel bins: the last stage is one frequency row
    model = _model(num_mel_bins=32)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 50, 32))).all()
    assert model.forward_features(torch.randn(1, 50, 32)).shape[2] == 1


# ----------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module",
                params=[("datar_test", False, 100), ("datar_test", True, 333), ("datar_nano", False, 100)],
                ids=["softmax-traced-at-100", "diff-traced-at-333", "nano-traced-at-100"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[DATAR, Path]:
    name, diff, trace_frames = request.param
    model = _model(name, diff=diff)
    path = tmp_path_factory.mktemp("datar") / f"{name}.onnx"
    models.export_onnx(model, path, example_frames=trace_frames)
    return model, path


def test_export_parity_at_other_lengths(exported: tuple[DATAR, Path]) -> None:
    model, path = exported
    sess = ort_session(path)
    assert [i.name for i in sess.get_inputs()] == ["fbank"]
    assert [o.name for o in sess.get_outputs()] == ["scores", "frame_scores"]
    rng = np.random.default_rng(0)
    for T, B in [(50, 1), (100, 2), (333, 1), (1000, 2)]:
        x = rng.standard_normal((B, T, 64)).astype(np.float32)
        with torch.no_grad():
            ref_scores, ref_frames = model.forward_with_frames(torch.from_numpy(x))
        scores, frames = sess.run(None, {"fbank": x})
        assert frames.shape == (B, _frames(T), 10), f"T={T}"
        np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0, err_msg=f"scores at T={T}")
        np.testing.assert_allclose(frames, ref_frames.numpy(), atol=1e-4, rtol=0, err_msg=f"frame scores at T={T}")


def test_export_grid_sample_is_bilinear_at_opset_17(exported: tuple[DATAR, Path]) -> None:
    _, path = exported
    graph = onnx.load(str(path))
    assert {o.domain: o.version for o in graph.opset_import}.get("", 0) == 17
    nodes = [n for n in graph.graph.node if n.op_type == "GridSample"]
    assert len(nodes) == 4  # one per deformable block of datar_test and datar_nano
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["mode"] == b"bilinear"
        assert attrs["align_corners"] == 1


def test_exported_ops_are_tensorrt_parser_ops(exported: tuple[DATAR, Path]) -> None:
    _, path = exported
    assert_tensorrt_ops(path)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    model = _model(diff=True)
    models.save(model, tmp_path, labels=[f"c{i}" for i in range(10)])
    loaded, config = models.load(tmp_path)
    x = torch.randn(1, 77, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
    assert config.name == "datar_test"
