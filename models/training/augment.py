"""Augmentation on cached, normalised log-mel features.

Everything works on features ``(frames, F)`` so that the 5 s clips are decoded and transformed once.
Sums of sounds (mixup, background noise) are done in the mel power domain, where they add: for
``a`` and ``b`` natural-log mel energies, ``log(e^a + e^b)`` is the log-mel of the mixture up to the
cross terms, which average out.

Example:
    >>> import torch
    >>> from realtime.config import FrontEndConfig, seconds_to_frames
    >>> batcher = ClipBatcher([torch.zeros(498, 64)], [0], num_classes=1, fe=FrontEndConfig(num_mel_bins=64))
    >>> x, y = batcher.batch([0], frames=100, gen=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), tuple(y.shape)
    ((1, 100, 64), (1, 1))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from realtime.config import FrontEndConfig, seconds_to_frames

from .features import denormalise, normalise

__all__ = ["AugmentConfig", "ClipBatcher", "energy_aware_start", "draw_window_frames", "spec_augment",
           "mix_power", "add_noise"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (seconds and decibels at the surface).

    Attributes:
        min_window_s: shortest training window.
        max_window_s: longest training window.
        energy_ratio: a crop must hold at least this fraction of the best crop's energy.
        gain_db: gains drawn uniformly from ``[-gain_db, gain_db]``.
        shift_s: circular time shift of up to this much inside the crop.
        mixup_alpha: Beta(alpha, alpha) mixup weight; 0 disables mixup.
        mixup_prob: fraction of batches mixed.
        freq_mask: SpecAugment maximum frequency mask width in bins (0 disables).
        time_mask_frac: SpecAugment maximum time mask as a fraction of the window (0 disables).
        noise_prob: probability of adding background noise to a clip.
        snr_db: range of the background's SNR.
    """

    min_window_s: float = 0.5
    max_window_s: float = 5.0
    energy_ratio: float = 0.5
    gain_db: float = 6.0
    shift_s: float = 0.2
    mixup_alpha: float = 0.5
    mixup_prob: float = 0.5
    freq_mask: int = 12
    time_mask_frac: float = 0.15
    noise_prob: float = 0.3
    snr_db: tuple[float, float] = (0.0, 30.0)


def draw_window_frames(gen: torch.Generator, min_s: float, max_s: float, fe: FrontEndConfig,
                       t_min: int = 1, t_max: int = 1 << 30) -> int:
    """A window length in frames of ``fe`` drawn uniformly from ``[min_s, max_s]`` seconds, clipped to
    ``[t_min, t_max]``."""
    s = min_s + (max_s - min_s) * float(torch.rand((), generator=gen))
    return int(min(max(seconds_to_frames(s, fe), t_min), t_max))


def energy_aware_start(energy: torch.Tensor, frames: int, ratio: float, gen: torch.Generator) -> int:
    """A random crop start whose window holds at least ``ratio`` of the best window's energy.

    Args:
        energy: per-frame linear energy ``(N,)``.
        frames: crop length; must not exceed ``N``.
        ratio: the fraction of the most energetic crop that a crop must reach.
        gen: random generator.
    """
    n = energy.shape[0]
    if frames >= n:
        return 0
    c = torch.cat([energy.new_zeros(1), energy.cumsum(0)])
    win = c[frames:] - c[:-frames]  # (N - frames + 1,) energy of each crop
    ok = torch.nonzero(win >= ratio * win.max()).flatten()
    return int(ok[torch.randint(len(ok), (1,), generator=gen)])


def mix_power(a: torch.Tensor, b: torch.Tensor, wa: float | torch.Tensor, wb: float | torch.Tensor,
              fe: FrontEndConfig) -> torch.Tensor:
    """Normalised log-mel of ``wa * A + wb * B`` where A and B are the mel powers of ``a`` and ``b``."""
    la = denormalise(a, fe) + torch.log(torch.as_tensor(wa, dtype=a.dtype))
    lb = denormalise(b, fe) + torch.log(torch.as_tensor(wb, dtype=a.dtype))
    return normalise(torch.logaddexp(la, lb), fe)


def add_noise(x: torch.Tensor, noise: torch.Tensor, snr_db: float, fe: FrontEndConfig) -> torch.Tensor:
    """Add a background ``noise`` (same shape, normalised log-mel) to ``x`` at a mean-power SNR of ``snr_db``."""
    px = denormalise(x, fe).exp().mean()
    pn = denormalise(noise, fe).exp().mean().clamp_min(1e-20)
    scale = px / pn * 10.0 ** (-snr_db / 10.0)
    return mix_power(x, noise, 1.0, scale.clamp_min(1e-20), fe)


def spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int) -> torch.Tensor:
    """SpecAugment (torchaudio): one frequency and one time mask per example, set to 0 (the mean)."""
    import torchaudio.transforms as TT

    y = x.transpose(1, 2).unsqueeze(1)  # (B, T, F) -> (B, 1, F, T)
    if freq_mask > 0:
        y = TT.FrequencyMasking(freq_mask, iid_masks=True)(y)
    if time_mask > 0:
        y = TT.TimeMasking(time_mask, iid_masks=True)(y)
    return y.squeeze(1).transpose(1, 2).contiguous()  # (B, 1, F, T) -> (B, T, F)


class ClipBatcher:
    """Turns cached clip features into augmented training batches ``(x (B, T, F), y (B, C))``.

    Args:
        feats: normalised log-mel ``(frames, F)`` per clip.
        labels: class index per clip.
        num_classes: number of classes.
        fe: front end (for the power-domain sums).
        cfg: augmentation settings.
        noise: normalised log-mel of background recordings ``(frames, F)`` (may be empty).
    """

    def __init__(self, feats: Sequence[torch.Tensor], labels: Sequence[int], num_classes: int, fe: FrontEndConfig,
                 cfg: AugmentConfig | None = None, noise: Sequence[torch.Tensor] = ()) -> None:
        self.feats = list(feats)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.num_classes = num_classes
        self.fe = fe
        self.cfg = cfg or AugmentConfig()
        self.noise = list(noise)
        # per-frame linear energy for the energy-aware crops
        self.energy = [denormalise(f, fe).exp().mean(dim=1) for f in self.feats]

    def crop(self, i: int, frames: int, gen: torch.Generator, augment: bool) -> torch.Tensor:
        f = self.feats[i]
        n = f.shape[0]
        if n < frames:  # pad with the clip's quietest level at a random offset
            pad = frames - n
            left = int(torch.randint(pad + 1, (1,), generator=gen)) if augment else 0
            return torch.cat([f.new_full((left, f.shape[1]), float(f.min())), f,
                              f.new_full((pad - left, f.shape[1]), float(f.min()))])
        if augment:
            s = energy_aware_start(self.energy[i], frames, self.cfg.energy_ratio, gen)
        else:
            s = int(torch.argmax(torch.nn.functional.avg_pool1d(self.energy[i][None, None], frames, 1)))
        return f[s:s + frames]

    def _noise(self, frames: int, gen: torch.Generator) -> torch.Tensor:
        rec = self.noise[int(torch.randint(len(self.noise), (1,), generator=gen))]
        if rec.shape[0] <= frames:
            reps = math.ceil((frames + 1) / rec.shape[0])
            rec = rec.repeat(reps, 1)
        s = int(torch.randint(rec.shape[0] - frames + 1, (1,), generator=gen))
        return rec[s:s + frames]

    def batch(self, indices: Sequence[int], frames: int, gen: torch.Generator, augment: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Build one batch of windows of ``frames`` frames for clip ``indices``; targets are one-hot/soft."""
        cfg = self.cfg
        shift = seconds_to_frames(cfg.shift_s, self.fe) if cfg.shift_s > 0 else 0
        xs = []
        for i in indices:
            x = self.crop(int(i), frames, gen, augment)
            if augment:
                if shift > 0:
                    x = torch.roll(x, int(torch.randint(-shift, shift + 1, (1,), generator=gen)), dims=0)
                if cfg.gain_db > 0:
                    g_db = (2 * float(torch.rand((), generator=gen)) - 1) * cfg.gain_db
                    # a gain of g_db dB multiplies mel power by 10^(g_db / 10): + g_db ln(10) / 10 in log-mel
                    x = normalise(denormalise(x, self.fe) + g_db / 10.0 * math.log(10.0), self.fe)
                if self.noise and float(torch.rand((), generator=gen)) < cfg.noise_prob:
                    lo, hi = cfg.snr_db
                    snr = lo + (hi - lo) * float(torch.rand((), generator=gen))
                    x = add_noise(x, self._noise(frames, gen), snr, self.fe)
            xs.append(x)
        x = torch.stack(xs)  # (B, T, F)
        y = torch.nn.functional.one_hot(self.labels[list(indices)], self.num_classes).float()  # (B, C)
        if augment and cfg.mixup_alpha > 0 and len(indices) > 1 and float(torch.rand((), generator=gen)) < cfg.mixup_prob:
            lam = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample())
            lam = max(lam, 1.0 - lam)  # the first clip dominates
            perm = torch.randperm(len(indices), generator=gen)
            x = mix_power(x, x[perm], lam, 1.0 - lam, self.fe)
            y = lam * y + (1.0 - lam) * y[perm]
        if augment and (cfg.freq_mask > 0 or cfg.time_mask_frac > 0):
            torch.manual_seed(int(torch.randint(1 << 31, (1,), generator=gen)))  # torchaudio masks use the global RNG
            x = spec_augment(x, cfg.freq_mask, int(cfg.time_mask_frac * frames))
        return x, y
