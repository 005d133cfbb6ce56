"""Model contract tests over the registry's ``*_test`` variants, AST options, layers and PEFT."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from models import create_model, list_models, peft  # noqa: E402
from models.layers import (ATTENTION_KINDS, Attention, BottleneckAdapter, DiffAttention, DropPath,  # noqa: E402
                           HeadRMSNorm, LoAAAdapter, Mlp, build_attention, lambda_init_fn, resample_axis,
                           resample_pos_embed)

TEST_MODELS = list_models("*_test")
AST_TEST_MODELS = list_models("ast*_test")
ADAPTERS = [None, "aat", "loaa"]


def _input(model, T: int = 100, B: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, model.num_mel_bins, generator=g)


def _set_fused(model, flag: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = flag


# ---------------------------------------------------------------------------------------------- generic contract


def test_registry_has_test_variants():
    assert "ast_test" in TEST_MODELS
    assert {"ast_base", "ast_small", "ast_tiny", "ast_test"} <= set(list_models("ast*"))


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'nope'.*ast_test"):
        create_model("nope")


@pytest.mark.parametrize("name", TEST_MODELS)
def test_contract_shapes_and_range(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model.t_min <= 100 <= model.t_max
    x = _input(model)
    with torch.no_grad():
        clip, frames = model.forward_logits(x)
        scores = model(x)
    assert clip.shape == (2, model.num_classes)
    assert scores.shape == (2, model.num_classes)
    assert torch.all((scores >= 0) & (scores <= 1))
    assert not torch.isnan(clip).any()
    if frames is not None:
        assert frames.dim() == 3 and frames.shape[0] == 2 and frames.shape[2] == model.num_classes
        assert not torch.isnan(frames).any()


@pytest.mark.parametrize("name", TEST_MODELS)
def test_contract_bad_input(name):
    model = create_model(name).eval()
    Fm, accepted = model.num_mel_bins, f"(B, T, {model.num_mel_bins})"
    bad = [torch.zeros(100, Fm), torch.zeros(1, 1, 100, Fm), torch.zeros(1, 100, Fm + 1),
           torch.zeros(1, model.t_min - 1, Fm), torch.zeros(1, model.t_max + 1, Fm)]
    for x in bad:
        with pytest.raises(ValueError) as err:
            model(x)
        assert accepted in str(err.value), str(err.value)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_contract_all_parameters_get_gradients(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    clip, frames = model.forward_logits(_input(model))
    loss = clip.square().mean() + (0.0 if frames is None else frames.square().mean())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", TEST_MODELS)
def test_contract_fused_equals_plain(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = _input(model)
    with torch.no_grad():
        _set_fused(model, True)
        a = model.forward_logits(x)[0]
        _set_fused(model, False)
        b = model.forward_logits(x)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- AST options


@pytest.mark.parametrize("name", AST_TEST_MODELS)
@pytest.mark.parametrize("attn", ATTENTION_KINDS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_ast_options_shapes_lengths_fused(name, attn, adapter):
    torch.manual_seed(0)
    model = create_model(name, attn=attn, adapter=adapter).eval()
    for T in (50, 100, 500, 1024):
        x = _input(model, T=T, B=1, seed=T)
        with torch.no_grad():
            _set_fused(model, True)
            clip, frames = model.forward_logits(x)
            _set_fused(model, False)
            clip_plain, frames_plain = model.forward_logits(x)
        fp, tp = model.grid(T)
        assert clip.shape == (1, model.num_classes)
        assert frames.shape == (1, tp, model.num_classes) and tp == (T - 16) // 10 + 1
        assert not torch.isnan(clip).any() and not torch.isnan(frames).any()
        torch.testing.assert_close(clip, clip_plain, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(frames, frames_plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", AST_TEST_MODELS)
@pytest.mark.parametrize("attn", ATTENTION_KINDS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_ast_trainable_get_gradients_frozen_none(name, attn, adapter):
    torch.manual_seed(0)
    model = create_model(name, attn=attn, adapter=adapter).train()
    stats = peft.prepare(model, adapter or "linear")
    assert 0 < stats["trainable"] < stats["total"]
    clip, frames = model.forward_logits(_input(model))
    (clip.square().mean() + frames.square().mean()).backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable {n} got no gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    # adapters' up-projections start at zero but still receive a non-zero gradient
    ups = [p for n, p in model.named_parameters() if n.endswith("adapter.up.weight")]
    assert all(p.grad.abs().sum() > 0 for p in ups)


@pytest.mark.parametrize("adapter", ["aat", "loaa"])
@pytest.mark.parametrize("attn", ATTENTION_KINDS)
def test_fresh_adapter_leaves_backbone_output_unchanged(attn, adapter):
    torch.manual_seed(0)
    backbone = create_model("ast_test", attn=attn).eval()
    adapted = create_model("ast_test", attn=attn, adapter=adapter).eval()
    state = adapted.state_dict()
    shared = backbone.state_dict()
    assert set(shared) < set(state)
    state.update(shared)
    adapted.load_state_dict(state, strict=True)
    x = _input(backbone, T=230)
    with torch.no_grad():
        a, af = backbone.forward_logits(x)
        b, bf = adapted.forward_logits(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(af, bf, atol=0, rtol=0)


def test_loaa_axes_default_and_validation():
    model = create_model("ast_test", adapter="loaa", depth=4)
    assert [b.mlp_adapter.axis for b in model.blocks] == ["time", "time", "freq", "freq"]
    model = create_model("ast_test", adapter="loaa", loaa_axes=["freq", "time"])
    assert [b.mlp_adapter.axis for b in model.blocks] == ["freq", "time"]
    with pytest.raises(ValueError, match="one entry per block"):
        create_model("ast_test", adapter="loaa", loaa_axes=["time"])
    with pytest.raises(ValueError, match="unknown adapter"):
        create_model("ast_test", adapter="lora")
    with pytest.raises(ValueError, match="unknown attention"):
        create_model("ast_test", attn="linear")


def test_ast_base_matches_audioset_ast_sizes():
    model = create_model("ast_base")
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (768, 12, 12)
    assert model.native_grid == (12, 101) and model.pos_embed.shape == (1, 2 + 12 * 101, 768)
    assert model.num_classes == 527 and model.num_mel_bins == 128 and model.t_max == 1024
    n = sum(p.numel() for p in model.parameters())
    assert 86_000_000 < n < 88_000_000  # AST-Base/16 with the AudioSet head: 87.3 M
    stats = peft.prepare(create_model("ast_base", adapter="aat"), "aat")
    assert 0.06 < stats["fraction"] < 0.09  # 8.0 % here; the AAT paper reports 7.1 %


def test_peft_methods():
    model = create_model("ast_test", adapter="aat")
    s = peft.prepare(model, "aat")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all("adapter" in n or n.startswith(("head.", "head_norm.")) for n in names)
    assert math.isclose(s["fraction"], s["trainable"] / s["total"])
    s_norm = peft.prepare(model, "aat", train_norms=True)
    assert s_norm["trainable"] > s["trainable"]
    assert peft.prepare(model, "full")["fraction"] == 1.0
    with pytest.raises(ValueError, match="adapter='loaa'"):
        peft.prepare(model, "loaa")
    with pytest.raises(ValueError, match="unknown fine-tuning method"):
        peft.prepare(model, "prompt")


def test_reset_classifier():
    model = create_model("ast_test")
    model.reset_classifier(3)
    clip, frames = model.forward_logits(torch.zeros(1, 100, 64))
    assert clip.shape == (1, 3) and frames.shape == (1, 9, 3)


# ---------------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
@pytest.mark.parametrize("heads", [1, 2, 3])
def test_attention_fused_equals_plain(kind, heads):
    torch.manual_seed(0)
    attn = build_attention(kind, 48, heads, depth=2).eval()
    x = torch.randn(2, 17, 48)
    a = attn(x)
    attn.fused_attn = False
    torch.testing.assert_close(a, attn(x), atol=1e-5, rtol=1e-5)


def test_diff_attention_forms():
    assert lambda_init_fn(0) == pytest.approx(0.2)
    assert lambda_init_fn(5) == pytest.approx(0.8 - 0.6 * math.exp(-1.5))
    d = DiffAttention(32, 2, depth=3, mode="diff")
    lam = d.lambda_value()
    expected = (torch.exp((d.lambda_q1 * d.lambda_k1).sum()) - torch.exp((d.lambda_q2 * d.lambda_k2).sum())
                + lambda_init_fn(3))
    torch.testing.assert_close(lam, expected)
    assert d.out_scale == pytest.approx(1 - lambda_init_fn(3)) and d.norm.weight.shape == (16,)
    a = DiffAttention(32, 2, mode="asda")
    assert a.lambda_value() == 0.1 and a.norm.weight.shape == (32,) and not hasattr(a, "lambda_q1")
    with pytest.raises(ValueError, match="mode"):
        DiffAttention(32, 2, mode="other")


def test_diff_attention_is_difference_of_two_softmax_maps():
    torch.manual_seed(0)
    d = DiffAttention(16, 1, mode="asda", qkv_bias=False).eval()
    x = torch.randn(1, 5, 16)
    q, k, v = d.qkv(x).chunk(3, dim=-1)
    s = 8 ** -0.5  # one head: two query/key maps 8 wide each, values 16 wide
    a1 = torch.softmax(q[..., :8] @ k[..., :8].transpose(1, 2) * s, dim=-1)
    a2 = torch.softmax(q[..., 8:] @ k[..., 8:].transpose(1, 2) * s, dim=-1)
    o = (a1 - 0.1 * a2) @ v
    expected = d.proj(d.norm(o))
    torch.testing.assert_close(d(x), expected, atol=1e-5, rtol=1e-5)


def test_head_rms_norm_matches_torch():
    x = torch.randn(3, 7, 16)
    ours = HeadRMSNorm(16, eps=1e-5)
    ref = torch.nn.RMSNorm(16, eps=1e-5)
    torch.testing.assert_close(ours(x), ref(x))


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError):
        Attention(30, num_heads=4)
    with pytest.raises(ValueError):
        DiffAttention(30, num_heads=2)


def test_mlp_and_drop_path():
    mlp = Mlp(8, 16, out_features=4)
    assert mlp(torch.zeros(2, 3, 8)).shape == (2, 3, 4)
    dp = DropPath(0.5)
    x = torch.ones(1000, 4)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = (y[:, 0] > 0).float().mean().item()
    assert 0.4 < kept < 0.6 and torch.allclose(y[y > 0], torch.full_like(y[y > 0], 2.0))
    with pytest.raises(ValueError):
        DropPath(1.0)


@pytest.mark.parametrize("size", [3, 4, 9, 10, 37, 101])
def test_resample_axis_crop_or_bilinear(size):
    g = torch.randn(1, 5, 9, 8)
    out = resample_axis(g, 2, size)
    if size <= 9:
        start = 9 // 2 - size // 2
        torch.testing.assert_close(out, g[:, :, start:start + size], atol=0, rtol=0)
    else:
        ref = F.interpolate(g.permute(0, 3, 1, 2), size=(5, size), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, ref.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)


def test_resample_pos_embed_keeps_prefix():
    pos = torch.randn(1, 2 + 5 * 9, 4)
    out = resample_pos_embed(pos, (5, 9), (5, 20), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 5 * 20, 4)
    torch.testing.assert_close(out[:, :2], pos[:, :2])
    torch.testing.assert_close(resample_pos_embed(pos, (5, 9), (5, 9), 2), pos)


def test_adapters_zero_init_and_width():
    a = BottleneckAdapter(32)
    assert a.down.out_features == 8 and a.up.weight.abs().sum() == 0
    assert a(torch.randn(2, 5, 32)).abs().sum() == 0
    with pytest.raises(ValueError, match="axis"):
        LoAAAdapter(32, axis="diag")


@pytest.mark.parametrize("axis", ["time", "freq"])
def test_loaa_mixes_neighbours_along_its_axis_only(axis):
    torch.manual_seed(0)
    a = LoAAAdapter(16, axis=axis)
    torch.nn.init.normal_(a.up.weight)
    Fp, Tp, P = 5, 9, 2
    x = torch.randn(1, P + Fp * Tp, 16)
    f, t = 2, 4
    x2 = x.clone()
    x2[0, P + f * Tp + t] += 1.0  # perturb the token at grid cell (f, t)
    diff = (a(x2, (Fp, Tp), P) - a(x, (Fp, Tp), P)).abs().sum(-1)[0, P:].reshape(Fp, Tp)  # -> (F', T')
    changed = {(int(i), int(j)) for i, j in (diff > 1e-6).nonzero()}
    expected = {(f, t - 1), (f, t), (f, t + 1)} if axis == "time" else {(f - 1, t), (f, t), (f + 1, t)}
    assert changed == expected
