"""Hugging Face AST checkpoints load into ours and give the same logits (``transformers`` is a test dependency)."""
from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from models import load, load_ast_checkpoint, save  # noqa: E402

MEL, NATIVE, LABELS = 64, 100, 5


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    num_mel_bins=MEL, max_length=NATIVE, num_labels=LABELS,
                                    id2label={i: f"sound_{i}" for i in range(LABELS)},
                                    label2id={f"sound_{i}": i for i in range(LABELS)})
    model = transformers.ASTForAudioClassification(config).eval()
    with torch.no_grad():  # make every tensor non-trivial (HF initialises biases and LayerNorms to 0/1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def hf_input():
    return torch.randn(3, NATIVE, MEL, generator=torch.Generator().manual_seed(1))


def _hf_logits(hf_model, x):
    with torch.no_grad():
        return hf_model(input_values=x).logits


def _to_transformers4_names(state):
    """The layout of transformers 4 (and of the AudioSet checkpoints on the Hub)."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"\.layers\.(\d+)\.", r".encoder.layer.\1.", k)
        k = re.sub(r"\.attention\.([qkv])_proj\.",
                   lambda m: ".attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)] + ".", k)
        k = k.replace(".attention.o_proj.", ".attention.output.dense.")
        k = k.replace(".mlp.fc1.", ".intermediate.dense.").replace(".mlp.fc2.", ".output.dense.")
        out[k] = v
    return out


def test_hf_directory_same_logits(hf_model, hf_input, tmp_path):
    hf_model.save_pretrained(tmp_path)
    ours = load_ast_checkpoint(tmp_path, name="ast_test")
    assert ours.native_frames == NATIVE and ours.num_classes == LABELS and ours.num_mel_bins == MEL
    assert ours.labels == [f"sound_{i}" for i in range(LABELS)]
    with torch.no_grad():
        clip, frames = ours.forward_logits(hf_input)
    torch.testing.assert_close(clip, _hf_logits(hf_model, hf_input), atol=1e-4, rtol=0)
    assert frames.shape == (3, (NATIVE - 16) // 10 + 1, LABELS)


def test_hf_state_dict_transformers4_layout(hf_model, hf_input, tmp_path):
    state = _to_transformers4_names(hf_model.state_dict())
    assert any(".encoder.layer.0.attention.attention.query." in k for k in state)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ast.safetensors"))
    for src in (state, tmp_path / "ast.safetensors"):
        ours = load_ast_checkpoint(src, name="ast_test", num_heads=2, num_mel_bins=MEL, norm_eps=1e-12)
        with torch.no_grad():
            clip, _ = ours.forward_logits(hf_input)
        torch.testing.assert_close(clip, _hf_logits(hf_model, hf_input), atol=1e-4, rtol=0)


def test_hf_checkpoint_with_fresh_aat_adapters_and_roundtrip(hf_model, hf_input, tmp_path):
    hf_model.save_pretrained(tmp_path / "hf")
    ours = load_ast_checkpoint(tmp_path / "hf", name="ast_test", adapter="aat")
    with torch.no_grad():
        clip, _ = ours.forward_logits(hf_input)
    torch.testing.assert_close(clip, _hf_logits(hf_model, hf_input), atol=1e-4, rtol=0)
    save(ours, tmp_path / "ours")  # labels come from the HF config
    again, config = load(tmp_path / "ours")
    assert list(config.labels) == [f"sound_{i}" for i in range(LABELS)]
    with torch.no_grad():
        torch.testing.assert_close(again.forward_logits(hf_input)[0], clip, atol=0, rtol=0)


def test_hf_checkpoint_other_lengths_run(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    ours = load_ast_checkpoint(tmp_path, name="ast_test")
    for T in (50, 300):
        with torch.no_grad():
            assert ours(torch.zeros(1, T, MEL)).shape == (1, LABELS)


def test_rejects_pickle_and_mismatches(hf_model, tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="only safetensors"):
        load_ast_checkpoint(tmp_path / "pytorch_model.bin")
    state = dict(hf_model.state_dict())
    with pytest.raises(ValueError, match="attn='mha'"):
        load_ast_checkpoint(state, name="ast_test", num_heads=2, num_mel_bins=MEL, attn="diff")
    state.pop("audio_spectrogram_transformer.layers.1.mlp.fc1.weight")
    with pytest.raises(ValueError, match="does not fit"):
        load_ast_checkpoint(state, name="ast_test", num_heads=2, num_mel_bins=MEL)
    with pytest.raises(ValueError, match="unexpected key"):
        load_ast_checkpoint({"something.else": torch.zeros(1)})
