"""Record the `aed profile` run of the shipped default model: ONNX Runtime against torch on the CPU,
window 1 s, hop 100 ms, on a soundscape of real ESC-50 events with ground-truth onsets.

The soundscape is written first (deterministic for a seed): fold-4 CC0/CC-BY clips (held out from the
selection run; the shipped model, trained on folds 1-4, has heard them, which matters little for timing),
mixed by ``models.training.synth`` onto the Speech Commands background recordings, about one event every
6 s (so that few overlap) at 10-30 dB SNR. Then::

    aed profile --engines onnxruntime,torch --source SCAPE.wav --events SCAPE.tsv --trigger model \
        --window 1 --hop 0.1 --threads 1 --report benchmarks/results/profile

Usage:
    python benchmarks/profile_default.py [--seconds 120] [--seed 0] [--report benchmarks/results/profile]
        [--engines onnxruntime,torch] [--window 1] [--hop 0.1]   (comma lists sweep, e.g. --window 0.5,1)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def make_scape(out: Path, seconds: float, seed: int) -> tuple[Path, Path]:
    """One long soundscape of isolated fold-4 events; returns (wav, tsv with onset/offset/label)."""
    from models.training.data import load_esc50
    from models.training.synth import SynthConfig, synthesise

    ds = load_esc50(DATA / "esc50", folds=[4])  # CC0/CC-BY clips only (the loader's default)
    noise = sorted(str(p) for p in (DATA / "noise").glob("*.flac"))
    n = int(seconds // 6)  # about one event every 6 s: the events rarely overlap
    cfg = SynthConfig(duration_s=seconds, events=(n, n), snr_db=(10.0, 30.0))
    labels = synthesise(ds, noise, out, 1, seed=seed, cfg=cfg)
    wav = next((out / "audio").glob("*.wav"))
    tsv = out / "events.tsv"
    tsv.write_text("".join(f"{s.onset:.3f}\t{s.offset:.3f}\t{s.event_label}\n" for s in labels))
    return wav, tsv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "profile"))
    ap.add_argument("--engines", default="onnxruntime,torch")
    ap.add_argument("--window", default="1", help="window(s) in seconds, comma-separated for a sweep")
    ap.add_argument("--hop", default="0.1", help="hop(s) in seconds, comma-separated for a sweep")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from apps.cli import main as aed

    with tempfile.TemporaryDirectory() as tmp:
        wav, tsv = make_scape(Path(tmp), args.seconds, args.seed)
        return aed(["profile", "--engines", args.engines, "--source", str(wav), "--events", str(tsv),
                    "--trigger", "model", "--window", args.window, "--hop", args.hop, "--threads", "1",
                    "--report", args.report])


if __name__ == "__main__":
    raise SystemExit(main())
