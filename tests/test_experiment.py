"""The science grid at --quick size: every method and seed runs, the table is generated
into its block of the results file, and a rerun reuses finished runs."""

import numpy as np
import pytest

from sempair.config import load_config
from sempair.experiment import BASELINES, BEGIN, END, METHODS, run_experiment


def test_quick_grid_writes_the_table_and_keeps_the_analysis(tmp_path):
    results = tmp_path / "results.md"
    results.write_text(f"# Results\n\nanalysis before\n\n{BEGIN}\nstale\n{END}\n\nanalysis after\n")
    first = run_experiment(tmp_path / "work", None, [], quick=True, results=results)

    seeds = (0, 1)
    trained = load_config().experiment.methods
    assert len(first.runs) == (len(BASELINES) + len(trained)) * len(seeds)
    assert set(first.runs["method"]) == {*BASELINES, *trained} and set(trained) <= set(METHODS)
    assert np.isfinite(first.runs["localization_accuracy"]).all()
    text = results.read_text()
    assert "analysis before" in text and "analysis after" in text and "stale" not in text
    assert "| `epg` |" in text and "EPG / exact-time InfoNCE: localization accuracy" in text
    assert "sempair experiment OUT --quick" in text and " ± " in text
    # the backbone is scored for trained methods and random encoders; hand-made has none
    assert "backbone macro-F1" in text and "backbone v→v mAP" in text
    by_method = first.runs.set_index("method")["backbone_localization_macro_f1"]
    assert np.isfinite(by_method.drop("handcrafted")).all()
    assert by_method["handcrafted"].isna().all()
    assert (first.runs["localization_c"] > 0).all()
    curves = tmp_path / "figures" / "training-curves.png"          # beside the results file
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "training-curves.png" in text

    model = tmp_path / "work" / "runs" / "epg-seed0" / "model" / "model.pt"
    stamp = model.stat().st_mtime_ns
    again = run_experiment(tmp_path / "work", None, [], quick=True, results=results)
    assert model.stat().st_mtime_ns == stamp, "a finished run must be reused, not retrained"
    assert again.runs["localization_accuracy"].tolist() == \
        first.runs["localization_accuracy"].tolist()


def test_unknown_method_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="known: temporal-exact"):
        run_experiment(tmp_path / "work", None, ["experiment.methods=[epg, nope]"], quick=True)
    assert not (tmp_path / "work").exists()
