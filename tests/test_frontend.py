import numpy as np
import pytest
import soundfile as sf

from realtime.config import FrontEndConfig, WindowConfig
from realtime.frontend import StreamingFbank, fbank, normalize
from realtime.resample import StreamingResampler
from tests.audio_helpers import esc50_clips

torch = pytest.importorskip("torch")
kaldi = pytest.importorskip("torchaudio.compliance.kaldi")


def reference(audio: np.ndarray, bins: int) -> np.ndarray:
    return kaldi.fbank(torch.from_numpy(audio)[None], htk_compat=True, use_energy=False, window_type="hanning",
                       num_mel_bins=bins, dither=0.0, frame_shift=10, sample_frequency=16000).numpy()


@pytest.mark.parametrize("bins", [64, 128])
def test_offline_matches_torchaudio_on_real_recordings(bins):
    cfg = FrontEndConfig(num_mel_bins=bins)
    for path in esc50_clips(3):
        audio, rate = sf.read(path, dtype="float32")
        assert rate == 16000
        ref = reference(audio, bins)
        ours = fbank(audio, cfg)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-3, path.name


@pytest.mark.parametrize("chunk", [160, 1024, 4000, "random"])
def test_streaming_matches_torchaudio_for_any_chunking(chunk):
    cfg = FrontEndConfig(num_mel_bins=128)
    audio, _ = sf.read(esc50_clips(2)[1], dtype="float32")
    ref = reference(audio, 128)
    fe = StreamingFbank(cfg)
    rng = np.random.default_rng(0)
    out, i = [], 0
    while i < audio.shape[0]:
        n = int(rng.integers(1, 5000)) if chunk == "random" else chunk
        out.append(fe.push(audio[i:i + n]))
        i += n
    got = np.concatenate(out)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-3
    assert fe.frames_emitted == ref.shape[0]


def test_reset_really_resets():
    cfg = FrontEndConfig(num_mel_bins=64)
    audio, _ = sf.read(esc50_clips(1)[0], dtype="float32")
    fe = StreamingFbank(cfg)
    first = fe.push(audio[:16000])
    fe.push(audio[16000:16100])          # leaves context behind
    fe.reset()
    assert fe.frames_emitted == 0
    np.testing.assert_array_equal(fe.push(audio[:16000]), first)


def test_short_input_emits_nothing_until_a_frame_is_complete():
    fe = StreamingFbank(FrontEndConfig(num_mel_bins=64))
    assert fe.push(np.zeros(399, np.float32)).shape == (0, 64)
    assert fe.push(np.zeros(1, np.float32)).shape == (1, 64)


def test_normalize_uses_config_statistics():
    cfg = FrontEndConfig(num_mel_bins=4, mean=1.0, std=0.5)
    np.testing.assert_allclose(normalize(np.full((2, 4), 2.0, np.float32), cfg), 1.0)


def test_resampler_streaming_equals_one_shot_and_rejects_bad_rates():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(48000).astype(np.float32) * 0.1
    one = StreamingResampler(48000, 16000)
    y1 = np.concatenate([one.push(x), one.flush()])
    two = StreamingResampler(48000, 16000)
    parts = [two.push(x[i:i + 777]) for i in range(0, x.shape[0], 777)] + [two.flush()]
    y2 = np.concatenate(parts)
    assert abs(y1.shape[0] - 16000) <= 1
    np.testing.assert_allclose(y1, y2, atol=1e-6)
    with pytest.raises(ValueError, match="accepted are whole rates from 4000 to 384000"):
        StreamingResampler(100, 16000)
    with pytest.raises(ValueError):
        StreamingResampler(44100.5, 16000)


def test_config_validation_in_user_units():
    with pytest.raises(ValueError, match="between 0.5 and 10 seconds"):
        WindowConfig(window_s=12)
    with pytest.raises(ValueError, match="hop_s"):
        WindowConfig(window_s=1.0, hop_s=0)
    assert WindowConfig(1.0, 0.1).frames(FrontEndConfig()) == (100, 10)
    assert WindowConfig(0.5, 0.1).frames(FrontEndConfig()) == (50, 10)
    with pytest.raises(ValueError, match="unknown FrontEndConfig keys"):
        FrontEndConfig.from_dict({"bins": 3})
