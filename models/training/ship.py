"""Package a trained checkpoint as a shipped model directory: weights, config, ONNX and attribution.

This is the step that turned ``runs/nano_f1234/final`` into ``models/pretrained/aed_default``::

    python -m models.training.ship runs/nano_f1234/final models/pretrained/aed_default \\
        --threshold 0.2 --onset-anchor centre --extra provenance.json

It copies the safetensors file byte for byte, writes ``config.json`` with the chosen thresholds and any
extra provenance merged into ``training``, exports ``model.onnx`` (the command line checks it against PyTorch with
ONNX Runtime, as ``aed export`` does) and writes ``ATTRIBUTION.md`` for the CC-BY clips among the training clips,
which it lists again from the data, folds and licences recorded in the checkpoint's own config.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from realtime.config import ONSET_ANCHORS, ONSET_SOURCES
from realtime.errors import ConfigError

__all__ = ["ship", "PRETRAINED_NOTICE"]

#: Where shipped weights derived from EfficientAT's checkpoint credit it; the MIT notice is copied from the
#: LICENSE file beside the checkpoint when it is there.
PRETRAINED_NOTICE = """## Pretrained origin

The network was initialised from EfficientAT's AudioSet-pretrained MobileNetV3 `mn04_as` (mAP 43.2) and then
fine-tuned, every parameter, in this project's own training run (no tensor is shipped unchanged):
F. Schmid, K. Koutini, G. Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge
Distillation", ICASSP 2023 (arXiv 2211.04772); code and models at github.com/fschmid56/EfficientAT.
Released under the MIT licence:
"""


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def ship(checkpoint: str | Path, out: str | Path, threshold: float | None = None, onset_anchor: str | None = None,
         extra: Mapping[str, Any] | None = None, license_txt: str | Path | None = None,
         title: str = "Attribution for the aed_default model's training clips", per_class: Mapping[str, float] | None
         = None, onset_source: str | None = None, pretrained_license: str | Path | None = None,
         merge_gap_s: float | None = None, early_windows: bool | None = None,
         backdate_onsets: bool | None = None, onset_refine: str | None = None,
         onset_lookback_s: float | None = None, ola_delay_s: float | None = None) -> Path:
    """Write ``out/{model.safetensors,config.json,model.onnx,ATTRIBUTION.md}`` from a training checkpoint.

    Args:
        checkpoint: a checkpoint directory written by ``aed train`` (``final`` or ``best``).
        out: the shipped model directory; existing model files in it are replaced.
        threshold: default detection threshold to store; ``None`` keeps the checkpoint's.
        onset_anchor: ``"newest"`` or ``"centre"`` (see :class:`realtime.detector.Detector`); ``None`` keeps it.
        extra: merged into the config's ``training`` block (evaluation results, stages, hardware).
        license_txt: ESC-50 ``LICENSE.txt``; default ``<data>/LICENSE.txt`` from the training config.
        title: heading of ``ATTRIBUTION.md``.
        per_class: per-class thresholds by label (tuned on validation soundscapes).
        onset_source: ``"frames"`` or ``"clip"`` (what the tracker follows); ``None`` keeps it.
        merge_gap_s: the tracker's merge gap (tuned with the thresholds); ``None`` keeps it.
        early_windows: score from a stream's first hop (see :class:`realtime.detector.DetectorConfig`).
        backdate_onsets: stamp onsets where the score began to rise (tuned with the thresholds).
        onset_refine, onset_lookback_s: stamp onsets at the strongest rise in level before them (tuned with the
            thresholds; :mod:`realtime.onsets`).
        ola_delay_s: how far behind the newest audio ``onset_source="ola"`` tracks.
        pretrained_license: the pretrained checkpoint's LICENSE (its MIT notice goes into ``ATTRIBUTION.md``);
            default the LICENSE beside the checkpoint named in the training provenance, where it exists.
    """
    from models.io import export_onnx, load

    from .attribution import write_attribution
    from .datasets import load_split

    checkpoint, out = Path(checkpoint), Path(out)
    model, config = load(checkpoint)
    # the changed settings go through the detection settings' own checks (a ConfigError names what is accepted)
    changes = {"threshold": threshold, "onset_anchor": onset_anchor, "onset_source": onset_source,
               "merge_gap_s": merge_gap_s, "early_windows": early_windows, "backdate_onsets": backdate_onsets,
               "onset_refine": onset_refine, "onset_lookback_s": onset_lookback_s, "ola_delay_s": ola_delay_s,
               "thresholds": {str(k): float(v) for k, v in per_class.items()} if per_class is not None else None}
    detection = replace(config.detection, **{k: v for k, v in changes.items() if v is not None})
    training = _merge(dict(config.training), extra or {})
    config = replace(config, detection=detection, training=training)      # ModelConfig checks labels vs thresholds
    _check_trained(model, config.training)

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("model.safetensors", "config.json", "model.onnx", "ATTRIBUTION.md"):
        (out / stale).unlink(missing_ok=True)
    shutil.copyfile(checkpoint / "model.safetensors", out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    export_onnx(model.eval(), out / "model.onnx", config)

    tc = config.training.get("train_config") or config.training.get("sed_config") or {}
    if tc.get("layout", "esc50") == "esc50" and tc.get("data"):
        ds = load_split("esc50", tc["data"], tc.get("train_folds"), tc.get("licenses"))
        lic = Path(license_txt) if license_txt else Path(tc["data"]) / "LICENSE.txt"
        write_attribution(lic, [it.path.name for it in ds.items], out / "ATTRIBUTION.md", title)
    if tc.get("noise_dir"):
        with open(out / "ATTRIBUTION.md", "a") as f:
            f.write("\n## Background recordings\n\nMixed under the training clips and used as negatives: the six "
                    "`_background_noise_` recordings of Speech Commands (P. Warden, \"Speech Commands: A Dataset for "
                    "Limited-Vocabulary Speech Recognition\", 2018), CC BY 4.0 "
                    "(https://creativecommons.org/licenses/by/4.0/). Synthetic speech negatives were made with "
                    "espeak-ng.\n")
    pre = tc.get("pretrained")
    if pre:
        mit = Path(pretrained_license) if pretrained_license else Path(pre).parent / "LICENSE"
        if not mit.is_file():
            raise FileNotFoundError(f"no LICENSE for the pretrained checkpoint at {mit}; pass --pretrained-license")
        note = PRETRAINED_NOTICE + "\n```\n" + mit.read_text().strip() + "\n```\n"
        with open(out / "ATTRIBUTION.md", "a") as f:
            f.write("\n" + note)
    return out


def unchanged_pretrained_tensors(model: Any, checkpoint: str | Path) -> list[str]:
    """Names of ``model``'s tensors that equal the pretrained checkpoint's tensor of the same name exactly."""
    import torch

    from models.efficientat import read_efficientat_state

    pre = read_efficientat_state(checkpoint)
    return [k for k, v in model.state_dict().items()
            if k in pre and pre[k].shape == v.shape and torch.equal(pre[k].to(v.dtype), v.cpu())]


def _check_trained(model: Any, training: Mapping[str, Any]) -> None:
    tc = training.get("sed_config") or training.get("train_config") or {}
    pre = tc.get("pretrained")
    if pre and Path(pre).is_file():
        same = unchanged_pretrained_tensors(model, pre)
        if same:
            raise ConfigError(f"{len(same)} tensors equal the pretrained checkpoint's unchanged (e.g. {same[:3]}); "
                             "shipped weights must all come out of our own training run")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.training.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory from aed train (e.g. runs/x/final)")
    p.add_argument("out", help="shipped model directory to write")
    p.add_argument("--threshold", type=float, help="default detection threshold to store")
    p.add_argument("--onset-anchor", choices=ONSET_ANCHORS, help="where onsets are time-stamped")
    p.add_argument("--extra", metavar="JSON", help="JSON file merged into the config's training block")
    p.add_argument("--license-txt", help="ESC-50 LICENSE.txt (default: <data>/LICENSE.txt)")
    p.add_argument("--thresholds", metavar="JSON", help="JSON file {default, per_class} of tuned thresholds "
                                                        "(e.g. the 'thresholds' block of eval_detector's eval.json)")
    p.add_argument("--onset-source", choices=ONSET_SOURCES, help="what the event tracker follows")
    p.add_argument("--pretrained-license", help="LICENSE of the pretrained checkpoint (default: beside it)")
    p.add_argument("--early-windows", action="store_true", help="score from a stream's first hop")
    a = p.parse_args(argv)
    try:
        extra = json.loads(Path(a.extra).read_text()) if a.extra else None
        th = json.loads(Path(a.thresholds).read_text()) if a.thresholds else {}
        threshold = a.threshold if a.threshold is not None else th.get("default")
        out = ship(a.checkpoint, a.out, threshold, a.onset_anchor, extra, a.license_txt,
                   per_class=th.get("per_class"), onset_source=a.onset_source,
                   pretrained_license=a.pretrained_license, merge_gap_s=th.get("merge_gap_s"),
                   early_windows=True if a.early_windows else None, backdate_onsets=th.get("backdate_onsets"),
                   onset_refine=th.get("onset_refine"), onset_lookback_s=th.get("onset_lookback_s"),
                   ola_delay_s=th.get("ola_delay_s"))
    except (ValueError, OSError) as e:  # bad settings, unreadable checkpoint or JSON: one line, not a traceback
        print(f"ship: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {', '.join(sorted(f.name for f in out.iterdir()))}")
    from models.io import load, verify_export

    print(f"verify {out / 'model.onnx'}: {verify_export(load(out)[0].eval(), out / 'model.onnx')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
