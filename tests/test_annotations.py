import pandas as pd
import pytest

from sempair.annotations import AnnotationError, label_clips, read_events


def write(tmp_path, text):
    path = tmp_path / "events.csv"
    path.write_text("recording,start,end,label,modality,anomaly\n" + text)
    return path


def test_labels_follow_the_majority_cover_rule(tmp_path):
    events = read_events(write(tmp_path, (
        "a.mp4,1.0,2.6,car,audiovisual,0\n"     # covers clip 1 fully, clip 2 at 60%
        "a.mp4,2.5,3.4,dog,audiovisual,0\n"     # clip 2 at 50%, clip 3 at 40%
        "a.mp4,0.0,4.0,horn,audio,0\n"          # audio-only: never a clip label
        "a.mp4,3.9,3.95,glass,visual,1\n")))    # tiny anomaly: still flags clip 3
    clips = pd.DataFrame({"recording": ["a.mp4"] * 4 + ["b.mp4"],
                          "start": [0.0, 1.0, 2.0, 3.0, 0.0], "end": [1.0, 2.0, 3.0, 4.0, 1.0]})
    out = label_clips(clips, events)
    assert out["label"].tolist() == ["background", "car", "car", "background", "background"]
    assert out["anomaly"].tolist() == [0, 0, 0, 1, 0]


@pytest.mark.parametrize("rows, message", [
    ("a.mp4,2.0,1.0,car,audiovisual,0\n", "start is not before end \\(line 2\\)"),
    ("a.mp4,0,1,car,smell,0\n", "modality not one of"),
    ("a.mp4,0,1,car,audio,2\n", "anomaly is not 0 or 1"),
    ("a.mp4,zero,1,car,audio,0\n", "'start' is not a number"),
    ("a.mp4,0,1,background,audio,0\n", "reserved"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    with pytest.raises(AnnotationError, match=message):
        read_events(write(tmp_path, rows))


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("recording,start,end,label\na.mp4,0,1,car\n")
    with pytest.raises(AnnotationError, match="missing columns \\['modality', 'anomaly'\\]"):
        read_events(path)
