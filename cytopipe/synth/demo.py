"""The bundled demo cohort, with the faults real archives have (another instrument, a file
truncated in transfer), so a demo shows how they are reported without stopping the cohort.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from cytopipe.synth.cohort import synth_cohort

DEMO = {"n_patients": 5, "seed": 1, "events_per_sample": 50_000}


def demo_cohort(out_dir: str | os.PathLike, events_per_sample: int = 50_000) -> pd.DataFrame:
    """The bundled demo: 5 patients, seed 1; patient 4 was measured on the archive instrument B,
    and one archived file was truncated in transfer, as real archives have."""
    sheet = synth_cohort(
        out_dir,
        n_patients=5,
        seed=1,
        events_per_sample=events_per_sample,
        instrument=["A", "A", "A", "B", "A"],
    )
    sheet = plant_truncated_file(Path(out_dir), sheet, source_row=len(sheet) - 1, day=400)
    sheet.to_csv(Path(out_dir) / "samples.tsv", sep="\t", index=False)
    return sheet


def plant_truncated_file(out: Path, sheet: pd.DataFrame, source_row: int, day: int) -> pd.DataFrame:
    """Add a sample whose FCS file is a copy of another cut short mid-DATA (a failed transfer),
    so a demo shows how one broken file is reported without stopping the cohort."""
    src = sheet.iloc[source_row]
    data = Path(src["path"]).read_bytes()
    pid = src["patient_id"]
    name = f"{pid}_D{day:03d}.fcs"
    (out / name).write_bytes(data[: len(data) * 2 // 3])
    infusion = date.fromisoformat(str(src["infusion_date"]))
    row = src.copy()
    row["sample_id"] = f"{pid}_D{day:03d}"
    row["path"] = str(out / name)
    row["day"] = day
    row["collection_date"] = (infusion + timedelta(days=day)).isoformat()
    row["true_b_cells"] = pd.NA
    row["true_lymphocytes"] = pd.NA
    row["true_car_t"] = pd.NA
    return pd.concat([sheet, row.to_frame().T], ignore_index=True)
