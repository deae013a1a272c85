"""The committed demo sample sheet is exactly what the generator's demo preset writes."""

import pandas as pd

from cytopipe.synth.demo import demo_cohort


def test_config_samples_tsv_matches_generated_demo(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generated = demo_cohort("demo/cohort", events_per_sample=2000)
    committed = pd.read_csv(repo / "config/samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    written = pd.read_csv("demo/cohort/samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    cols = [c for c in committed.columns if c not in ("true_b_cells", "true_lymphocytes")]
    pd.testing.assert_frame_equal(committed[cols], written[cols])
    assert len(generated) == len(committed)
    # the planted broken archive file is in the demo, cut short
    broken = committed[committed["true_b_cells"] == ""]
    assert list(broken["sample_id"]) == ["P05_D400"]
