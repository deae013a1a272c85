"""Synthetic FCS files and CAR-T cohorts with known truth, to test every stage against.

Why synthetic: real archives have no per-event truth, and B-cell aplasia (a handful of B cells
among tens of thousands of lymphocytes) is exactly where gates drawn around noise go wrong. The
generator therefore writes what a cytometer would record: log-normal marker levels in linear
units, autofluorescence, a spillover matrix that is really applied (and written to $SPILLOVER),
Poisson-like and electronic detector noise, saturation at the top of the range, a Time channel
of Poisson arrivals, debris, doublets and dead cells; and beside every `NAME.fcs` a
`NAME.truth.parquet` holding the true population of each event.

The biology and instrument numbers live in `cytopipe.synth.model`. Acquisition anomalies (issue 8)
plug in through `simulate_sample(..., anomalies=[...])`: each anomaly edits the raw acquisition
and returns the events it affected, which become an `anomaly` truth column.

Modules: composition (what a tube holds), biology (pre-spill signals per event), anomalies,
simulate (one acquisition), truth (truth labels as population masks), sample_files (FCS + truth
files), cohort_plan (each patient's hidden story), cohort (a cohort on disk), demo (the bundled
demo cohort).
"""
