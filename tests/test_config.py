"""The one config schema: ModelConfig and its parts read, check and write the layout of config.json."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from realtime.config import DetectionSettings, FrontEndConfig, InputRange, ModelConfig, WindowConfig
from realtime.detector import DetectorConfig
from realtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "pretrained" / "aed_default" / "config.json"


def test_round_trip_and_num_mel_bins_stored_once():
    mc = ModelConfig(labels=("a", "b"), frontend=FrontEndConfig(num_mel_bins=64), window=WindowConfig(2.0, 0.5),
                     input=InputRange(10, 500, 16), detection=DetectionSettings(0.4, {"a": 0.3}, merge_gap_s=0.5),
                     name="x", kwargs={"k": 1}, training={"data": "y"})
    d = mc.to_dict()
    assert "num_mel_bins" not in d["input"] and d["frontend"]["num_mel_bins"] == 64
    assert d["thresholds"]["default"] == 0.4 and d["thresholds"]["per_class"] == {"a": 0.3}
    back = ModelConfig.from_dict(json.loads(json.dumps(d)))
    assert back == mc and back.num_mel_bins == 64


def test_reads_the_shipped_checkpoint_in_the_older_layout():
    current = json.loads(SHIPPED.read_text())
    # the layout written before num_mel_bins was stored once (and before max_batch was stored)
    raw = {**current, "input": {"num_mel_bins": current["frontend"]["num_mel_bins"],
                                "t_min": current["input"]["t_min"], "t_max": current["input"]["t_max"]}}
    mc = ModelConfig.from_dict(raw)
    assert mc.num_mel_bins == raw["input"]["num_mel_bins"] == raw["frontend"]["num_mel_bins"]
    assert mc.frontend == ModelConfig.from_dict(current).frontend and list(mc.labels) == current["labels"]
    assert mc.detection.threshold == raw["thresholds"]["default"] and len(mc.labels) == len(raw["labels"])
    det = DetectorConfig.from_model(mc)
    assert det.onset_source == raw["thresholds"]["onset_source"] and det.frontend == mc.frontend


def test_older_layouts_without_front_end_or_thresholds():
    mc = ModelConfig.from_dict({"labels": ["a"], "input": {"num_mel_bins": 64, "t_min": 1, "t_max": 10}})
    assert mc.frontend == FrontEndConfig(num_mel_bins=64) and mc.detection == DetectionSettings()
    assert mc.input == InputRange(1, 10, 64)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["input"].update(num_mel_bins=99), "99"),
    (lambda d: d.update(colour="red"), "unknown model config keys"),
    (lambda d: d["thresholds"].update(treshold=0.3), "unknown detection setting"),
    (lambda d: d["thresholds"]["per_class"].update(nope=0.3), "labels the model does not have"),
    (lambda d: d.update(labels=[]), "labels"),
    (lambda d: d.update(output_activation="relu"), "output_activation"),
    (lambda d: d["window"].update(hop_s=5.0), "hop_s"),
])
def test_bad_configs_name_the_origin_and_what_is_accepted(edit, match):
    d = json.loads(SHIPPED.read_text())
    edit(d)
    with pytest.raises(ConfigError, match=match) as e:
        ModelConfig.from_dict(d, origin="x/config.json")
    assert str(e.value).startswith("x/config.json:")


def test_detector_settings_combine_by_one_route():
    mc = ModelConfig.from_dict(json.loads(SHIPPED.read_text()))
    base = DetectorConfig.from_model(mc)
    user = base.override(threshold=0.7, window_s=2.0, merge_gap_s=None, input_rate=48000)
    assert (user.threshold, user.window, user.merge_gap_s, user.input_rate) == (0.7, WindowConfig(2.0, 0.1),
                                                                                base.merge_gap_s, 48000)
    assert user.detection == replace(mc.detection, threshold=0.7)
    with pytest.raises(ConfigError, match="window_s"):
        base.override(window_s=20.0)
