"""The shipped detector on the ESC-50 clips it never trained on: the ones whose licence kept them out.

Every clip of the given folds whose own licence is not CC0 or CC-BY (CC-BY-NC, Sampling+) is run through
``realtime.Detector.process`` with the model's stored settings, as ``aed detect`` would. Per clip: did an event
of its own class come out, and did an event of another class come out too.

These clips are real recordings the model never saw, but the recipe's choices were made on fold 4, so this is
not a strict held-out test of the recipe.

Usage:
    python benchmarks/eval_unseen_clips.py --model models/pretrained/aed_default \
        --out benchmarks/results/default_model/unseen_clips.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from engines import create_engine
    from models.training.data import SHIPPABLE_LICENSES, load_esc50
    from realtime import Detector
    from realtime.sources import read_audio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True, help="model directories, compared on the same clips")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/esc50"))
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    ds = load_esc50(a.data, folds=a.folds, licenses=None)
    items = [it for it in ds.items if it.license not in SHIPPABLE_LICENSES]
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    res = {"command": command, "date": time.strftime("%Y-%m-%d"), "clips": len(items),
           "licences": dict(Counter(it.license for it in items)), "models": {}}
    for model in a.model:
        right = wrong = 0
        wrong_labels: Counter = Counter()
        with create_engine("onnxruntime", model, intra_op_num_threads=1) as engine:
            det = Detector(engine)
            for it in items:
                x, sr = read_audio(it.path)
                d = det if sr == det.input_rate else det.with_config(input_rate=sr)
                labels = {e.label for e in d.process(x) if e.kind == "onset"}
                own = ds.labels[it.label]
                right += own in labels
                wrong += bool(labels - {own})
                wrong_labels.update(labels - {own})
        s = det.config
        res["models"][model] = {
            "settings": {"onset_source": s.onset_source, "threshold": s.threshold, "onset_refine": s.onset_refine,
                         "ola_delay_s": s.ola_delay_s},
            "right_class_share": right / max(1, len(items)), "wrong_class_share": wrong / max(1, len(items)),
            "most_common_wrong": wrong_labels.most_common(8)}
        print(model, f"right class {100 * right / len(items):.1f} %, wrong class too {100 * wrong / len(items):.1f} %")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
