import pytest

from realtime.events import EventTracker


def run(tr, trace, hop=0.1):
    out = []
    for i, s in enumerate(trace):
        out += tr.update(i * hop, s if isinstance(s, list) else [s])
    return out


def test_hysteresis_keeps_event_open_above_release():
    tr = EventTracker(["a"], threshold=0.6, release_ratio=0.5, hop_s=0.1)
    ev = run(tr, [0.1, 0.7, 0.4, 0.35, 0.2, 0.1])
    assert [(e.kind, e.onset_s) for e in ev] == [("onset", 0.1), ("offset", 0.1)]
    assert ev[1].offset_s == pytest.approx(0.4)      # first value below 0.3 is at t=0.4
    assert ev[1].score == pytest.approx(0.7)


def test_min_duration_suppresses_short_blips():
    tr = EventTracker(["a"], threshold=0.5, min_duration_s=0.3, hop_s=0.1)
    assert run(tr, [0.9, 0.1, 0.9, 0.9, 0.1]) == []
    tr.reset()
    ev = run(tr, [0.9, 0.9, 0.9, 0.1])
    assert [e.kind for e in ev] == ["onset", "offset"]
    assert ev[0].onset_s == 0.0


def test_merge_gap_joins_dips_shorter_than_the_gap():
    tr = EventTracker(["a"], threshold=0.5, release_ratio=1.0, merge_gap_s=0.25, hop_s=0.1)
    ev = run(tr, [0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1])
    assert [e.kind for e in ev] == ["onset", "offset"]
    assert ev[1].offset_s == pytest.approx(0.5)
    tr2 = EventTracker(["a"], threshold=0.5, release_ratio=1.0, merge_gap_s=0.0, hop_s=0.1)
    assert [e.kind for e in run(tr2, [0.9, 0.9, 0.1, 0.1, 0.9, 0.1])] == ["onset", "offset", "onset", "offset"]


def test_per_class_thresholds_and_flush():
    tr = EventTracker(["a", "b"], threshold=0.5, thresholds={"b": 0.9}, hop_s=0.1)
    ev = run(tr, [[0.6, 0.6], [0.6, 0.95]])
    assert [(e.label, e.kind) for e in ev] == [("a", "onset"), ("b", "onset")]
    assert {e.label for e in tr.open_events()} == {"a", "b"}
    closed = tr.flush(2.0)
    assert sorted((e.label, e.offset_s) for e in closed) == [("a", 2.0), ("b", 2.0)]
    assert tr.open_events() == []


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown labels"):
        EventTracker(["a"], thresholds={"z": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EventTracker(["a"], threshold=1.5)
    tr = EventTracker(["a", "b"])
    with pytest.raises(ValueError, match="expected 2 scores"):
        tr.update(0.0, [0.1])


def test_backdated_onsets_move_the_stamp_not_the_emission():
    from realtime.events import EventTracker

    scores = [0.0, 0.3, 0.45, 0.6, 0.7, 0.1, 0.0]
    plain = EventTracker(["a"], threshold=0.5, release_ratio=0.5, hop_s=0.1)
    back = EventTracker(["a"], threshold=0.5, release_ratio=0.5, hop_s=0.1, backdate_onsets=True)
    out_p = [(i, e) for i, s in enumerate(scores) for e in plain.update(i * 0.1, [s])]
    out_b = [(i, e) for i, s in enumerate(scores) for e in back.update(i * 0.1, [s])]
    on_p = [(i, e.onset_s) for i, e in out_p if e.kind == "onset"]
    on_b = [(i, e.onset_s) for i, e in out_b if e.kind == "onset"]
    assert on_p[0][0] == on_b[0][0] == 3                        # emitted at the same update
    assert on_p[0][1] == pytest.approx(0.3) and on_b[0][1] == pytest.approx(0.1)  # stamped where it began to rise
    # a rise that falls back below release before reaching the threshold does not backdate a later event
    t = EventTracker(["a"], threshold=0.5, release_ratio=0.5, hop_s=0.1, backdate_onsets=True)
    evs = [e for i, s in enumerate([0.3, 0.0, 0.4, 0.6]) for e in t.update(i * 0.1, [s])]
    assert evs[0].onset_s == pytest.approx(0.2)
