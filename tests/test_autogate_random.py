"""Automated gating on randomized synthetic files (cytopipe.synth.variants) that nobody picked:
the seeds come from a fixed string hash (benchmarks/random_accuracy.py), consecutive seeds cycle
through the composition classes, and every file is gated with the unedited template.

The issue's targets per class: F1 >= 0.95 for lymphocytes, T cells and B cells and >= 0.90 for
the B-cell subsets (populations with >= 50 true events), no B cells invented in aplasia (found
<= 2 x truth + 5 where truth < 20), plasmablast counts within 20% or 5 events. They are
asserted wherever the current gating meets them. Where it does not, the (class, population) is
listed in KNOWN_MISSES with the measured figure; those are NOT loosened targets but open work
for the gating: a strict xfail turns red when one starts to hold, so the list cannot go stale.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import benchmark

from cytopipe.config import load_config
from cytopipe.gating.sample import gate
from cytopipe.gating.stats import unlike_template
from cytopipe.gating.template import load_template
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import preprocess
from cytopipe.synth.composition import composition_counts
from cytopipe.synth.model import B_SUBSETS, POPULATIONS
from cytopipe.synth.sample_files import read_truth
from cytopipe.synth.variants import (
    CLASSES,
    draw_variant,
    read_variant_record,
    simulate_variant,
    variant_class,
    variant_record,
    write_variant,
)

random_accuracy = benchmark("random_accuracy")
real_gating = benchmark("real_gating")

SMALL_DRAW = 14  # two files per class, 10-30 k events: ~15-35 s
LARGE_DRAW = 70  # ten files per class: `make bench`
SMALL_EVENTS = (10_000, 30_000)

# (class, population) -> what the gating measured (worst file; 2026-11-30, session 6):
# targets it misses today. Open work for the gating, not loosened targets.
KNOWN_MISSES_SMALL = {
    ("myeloid_tissue", "lymphocytes"): "F1 0.929 (seed 598707842)",
}
# The 70-file draw of the slow test below (10-30 k events): every (class, population) it misses.
# Lymphopenic lymphocytes (0.799) and T cells (0.939) left the list in session 6 (the FSC x SSC
# view), and plasmablasts of a PBMC file (rescue by phenotype outside the scatter gate).
KNOWN_MISSES_LARGE = {
    ("myeloid_tissue", "lymphocytes"): "F1 0.929 (seed 598707842)",
    ("pregated_leukocytes", "plasmablasts"): "pb_count: found 20 of 26 (seed 598707882)",
    # session 32: up to 4 mixture components in CD45 x SSC (3 before) fit this file's
    # lymphopenic cluster a little wider (0.958 -> 0.948, the scatter bound 0.984); the same
    # change fixed a PBMC file of another draw whose monocytes shared a lymphocyte component
    ("lymphopenic_post_cart", "lymphocytes"): "F1 0.948 (seed 598707857)",
}


def _miss_keys(table) -> set[tuple[str, str]]:
    bad = random_accuracy.misses(table)
    return set(zip(bad["class"], bad["population"], strict=True))


# ------------------------------------------------------------------ the generator


def test_consecutive_seeds_cycle_through_every_class():
    assert [variant_class(s) for s in range(len(CLASSES))] == list(CLASSES)
    seeds = random_accuracy.evaluation_seeds(SMALL_DRAW)
    assert {variant_class(s) for s in seeds} == set(CLASSES)
    assert seeds == random_accuracy.evaluation_seeds(SMALL_DRAW)  # fixed, not chosen


def test_event_counts_are_log_uniform_within_bounds():
    counts = np.array([draw_variant(s).n_events for s in range(300)])
    assert counts.min() >= 10_000 and counts.max() <= 1_000_000
    # log-uniform: about a third of the draws in each decade third (10k-46k-215k-1M)
    thirds = np.histogram(np.log10(counts), bins=[4, 4 + 2 / 3, 4 + 4 / 3, 6])[0]
    assert (thirds > 70).all(), thirds


def _lymph_share(comp: dict[str, float]) -> float:
    lymph = sum(comp[p] for p in ("t_cell", "nk", *B_SUBSETS))
    return lymph / (lymph + comp["granulocyte"] + comp["monocyte"])


def test_each_class_has_its_composition():
    """What makes a class: what it lacks, and what dominates its leukocytes."""
    by_class: dict[str, list] = {c: [] for c in CLASSES}
    for seed in range(7 * 12):
        v = draw_variant(seed, SMALL_EVENTS)
        by_class[v.cls].append(v)
    for v in by_class["pregated_lymphocytes"]:
        assert v.composition["granulocyte"] == v.composition["monocyte"] == 0.0
        assert v.composition["debris"] == 0.0
    for v in by_class["pregated_leukocytes"]:
        assert v.composition["debris"] == 0.0
        gone = ("cd45_negative",) if v.params["pregate"] == "cd45" else ("doublet", "dead")
        assert all(v.composition[p] == 0.0 for p in gone)
    assert all(_lymph_share(v.composition) > 0.8 for v in by_class["lymphoid_tissue"])
    assert all(_lymph_share(v.composition) < 0.15 for v in by_class["myeloid_tissue"])
    assert all(_lymph_share(v.composition) < 0.15 for v in by_class["lymphopenic_post_cart"])
    for v in by_class["pbmc"]:
        assert v.composition["granulocyte"] < 0.05
    assert {v.params["aplasia"] for v in by_class["lymphopenic_post_cart"]} == {True, False}
    assert not any(
        v.params["aplasia"] for c in ("lymphoid_tissue", "myeloid_tissue") for v in by_class[c]
    )


def test_aplasia_leaves_a_handful_of_b_cells():
    """Aplasia (every other lymphopenic file, a quarter of blood files): 0-15 B cells."""
    aplastic = [v for v in map(draw_variant, range(140)) if v.params["aplasia"]]
    assert {v.cls for v in aplastic} >= {"lymphopenic_post_cart", "lysed_blood", "pbmc"}
    for v in aplastic:
        counts = composition_counts(v.n_events, v.composition)
        assert sum(counts[s] for s in B_SUBSETS) <= 16, (v.seed, v.cls)


def test_variant_file_has_truth_and_record_and_is_reproducible(tmp_path):
    seed = random_accuracy.evaluation_seeds(1)[0] + 3
    variant = draw_variant(seed, (10_000, 10_000))
    path = write_variant(tmp_path / "a" / "v.fcs", variant)
    again = write_variant(tmp_path / "b" / "v.fcs", draw_variant(seed, (10_000, 10_000)))
    assert path.read_bytes() == again.read_bytes()
    truth = read_truth(path)
    assert len(truth) == 10_000 and set(truth["population"].cat.categories) == set(POPULATIONS)
    record = read_variant_record(path)
    assert record["class"] == variant.cls and record["seed"] == seed
    assert sum(record["true_counts"].values()) == 10_000
    for key in ("scatter_gain", "scatter_position", "stain_separation", "detector_gain",
                "spill_strength", "composition"):  # fmt: skip
        assert key in record, key
    assert "variant" not in json.dumps(simulate_variant(variant).keywords)  # nothing tells


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_lymphocytes_sit_where_the_voltages_were_set(seed):
    """The drawn scatter voltage and position are in the file: the T cells' SSC median as a
    fraction of the range is the drawn target times the lymphocytes' position factor."""
    variant = draw_variant(seed, (10_000, 10_000))
    sample = simulate_variant(variant)
    record = variant_record(variant)
    ssc = next(i for i, c in enumerate(variant.instrument.channels) if c.canonical == "SSC-A")
    t_cells = np.asarray(sample.labels) == "t_cell"
    measured = np.median(sample.events[t_cells, ssc]) / sample.pnr[ssc]
    expected = (
        record["lymphocyte_scatter_target"]["SSC"] * record["scatter_position"]["lymphocytes"][1]
    )
    assert measured == pytest.approx(expected, rel=0.08)


# ------------------------------------------------------------------ the gating


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    table = random_accuracy.evaluate(tmp_path_factory.mktemp("variants"), SMALL_DRAW, SMALL_EVENTS)
    print("\n" + random_accuracy.report(table))
    return table


def test_small_draw_covers_every_class(small_table):
    assert set(small_table["class"]) == set(CLASSES)
    assert small_table["seed"].nunique() == SMALL_DRAW


def test_small_draw_meets_the_targets_except_known_misses(small_table):
    bad = random_accuracy.misses(small_table)
    known = [
        (c, p) in KNOWN_MISSES_SMALL for c, p in zip(bad["class"], bad["population"], strict=True)
    ]
    assert bad[~np.array(known, dtype=bool)].empty, bad[~np.array(known, dtype=bool)].to_string()


def test_best_quadrant_bounds_our_quadrants(small_table):
    """The best F1 any IgD x CD27 cuts reach (chosen with the truth) is an upper bound of our
    own quadrant cuts' F1 on every file: what tells a reachable miss from an unreachable one."""
    rows = small_table.dropna(subset=["best_quadrant_f1"])
    assert set(rows["population"]) == set(random_accuracy.QUADRANTS)
    assert (rows["best_quadrant_f1"] >= rows["f1"] - 1e-4).all(), rows.to_string()
    assert (rows["best_quadrant_f1"] <= 1.0).all()


def test_no_b_cells_invented_in_aplasia(small_table):
    rows = random_accuracy.aplasia_rows(small_table)
    assert len(rows) >= 1
    assert (rows["found"] <= 2 * rows["truth"] + 5).all(), rows.to_string()


def test_no_b_cell_gate_is_doubted_for_cd20_events_outside_it(small_table):
    """The `missed:` check (a failed CD19 stain) says nothing on files without one, aplasia
    files included (at most 0.2% of the lymphocytes are CD3- CD20+ outside the B cells)."""
    flags = small_table.loc[small_table["population"] == "b_cells", "flag"].fillna("")
    assert not flags.str.contains("outside the B-cell gate").any(), flags.tolist()


def test_no_compensation_is_doubted_where_the_generator_compensated_exactly(small_table):
    """The `independent:` checks (two stains rising together on naive B cells or T cells:
    spillover left) say nothing where the file's matrix is the one the generator spilled with
    (over the 70-file draw: at most 0.31 on the naive B cells; on the T cells at most 0.18,
    and down to -0.75, within the -0.9 allowed there)."""
    flags = small_table["flag"].fillna("")
    assert not flags.str.contains("check the compensation|check its compensation").any(), (
        flags.tolist()
    )


def test_the_lymphocyte_misses_are_at_the_limit_of_the_scatter_view(small_table):
    """Where the lymphocytes miss the target, a classifier taught by the truth on the gate's own
    view (FSC, SSC, CD45) misses it too, and our gate is within 0.01 of it: the generator drew
    monocytes on top of the lymphocytes there (myeloid tissue), no scatter gate can part them."""
    rows = small_table[small_table["population"] == "lymphocytes"]
    rows = rows.dropna(subset=["best_scatter_f1"])
    assert len(rows) == len(rows[rows["f1"] < random_accuracy.TARGET["lymphocytes"]]) > 0
    assert (rows["best_scatter_f1"] < random_accuracy.TARGET["lymphocytes"]).all(), rows
    assert (rows["f1"] >= rows["best_scatter_f1"] - 0.01).all(), rows.to_string()


@pytest.mark.parametrize("cls,population", sorted(KNOWN_MISSES_SMALL))
@pytest.mark.xfail(strict=True, reason="known miss of the current gating (KNOWN_MISSES_SMALL)")
def test_known_miss_still_misses(small_table, cls, population):
    """Strict xfail: when the gating starts to meet this target, move it out of the list."""
    assert (cls, population) not in _miss_keys(small_table)


@pytest.mark.slow
def test_large_draw_meets_the_targets_except_known_misses(tmp_path, repo):
    """70 files (ten per class) of 10-30 k events; the table goes to results/."""
    table = random_accuracy.evaluate(tmp_path / "variants", LARGE_DRAW, SMALL_EVENTS)
    (repo / "results").mkdir(exist_ok=True)
    table.to_csv(repo / "results" / "autogate_random_accuracy.tsv", sep="\t", index=False)
    print("\n" + random_accuracy.report(table))
    assert set(table["class"]) == set(CLASSES)
    bad = random_accuracy.misses(table)
    new = [
        (c, p) not in KNOWN_MISSES_LARGE
        for c, p in zip(bad["class"], bad["population"], strict=True)
    ]
    assert bad[np.array(new, dtype=bool)].empty, bad[np.array(new, dtype=bool)].to_string()
    rows = random_accuracy.aplasia_rows(table)
    assert (rows["found"] <= 2 * rows["truth"] + 5).all(), rows.to_string()


# Files of the draw that once missed, kept as regressions with what fixed them.
REGRESSIONS = {
    598707859: ("lymphocytes", "PBMC: the mixture's lymphocyte cluster took half the monocytes "
                "(F1 0.91) until each k was also fitted from the lineage+ events"),
    598707876: ("b_naive", "lymphoid tissue: B cells are most CD3- lymphocytes, so the CD20 "
                "window's quantile lay inside them (cut 0.50 through the B cells, F1 0.90) "
                "until the negative level was measured on the T cells"),
    598707900: ("b_switched_memory", "330 B cells: too few for the majority peak at 500 events, "
                "the window quantile put CD27 above the memory cells (F1 0.55)"),
    598707892: ("lymphocytes", "lymphopenic: monocytes overlap the lymphocytes in CD45 x SSC "
                "(F1 0.80) until an impure cluster had FSC x SSC tried as well"),
    598707880: ("plasmablasts", "PBMC: 8 of 22 plasmablasts, larger than lymphocytes, outside "
                "the FSC x SSC lymphocyte gate until found by phenotype wherever they sit"),
    110104448: ("lymphocytes", "lymphopenic after CAR-T, another draw (label 'cytopipe fresh draw "
                "session 32'): the negatives of every cell split in two humps on CD19 (no B "
                "cells), most events were taken as lineage+ and the granulocytes as the "
                "lymphocytes (F1 0.10; at 514 k events 56 B cells for 9) until a lineage cut "
                "holding most of the other lineage's events was ignored"),
}  # fmt: skip


def test_dim_b_cells_in_b_cell_rich_tissue_are_cut_below_their_peak(tmp_path):
    """Seed 110104460 of another draw (label 'cytopipe fresh draw session 32'; lymphoid tissue,
    B cells 58% of the lymphocytes, CD19 at half the gain): no valley above the T cells' 95%
    level, the B cells' lower tail below it, and the CD19 cut went where the events run out,
    above every B cell (B cells 0.03, every subset 0). A population with its own peak above
    the negatives is cut below that peak (`anchors.risen_population`). Its plasmablasts
    stay short (216 of 279 here: a fifth have CD19 as low as the NK cells at this gain)."""
    table = random_accuracy.evaluate(tmp_path, 1, SMALL_EVENTS, seeds=[110104460])
    scored = table[~table["population"].isin(["plasmablasts"])]
    assert (scored[scored["population"] == "b_cells"]["truth"] > 10_000).all()
    assert random_accuracy.misses(scored).empty, table.to_string()


@pytest.fixture(scope="module")
def regression_table(tmp_path_factory):
    return random_accuracy.evaluate(
        tmp_path_factory.mktemp("regressions"), len(REGRESSIONS), SMALL_EVENTS,
        seeds=sorted(REGRESSIONS),
    )  # fmt: skip


@pytest.mark.parametrize("seed", sorted(REGRESSIONS))
def test_files_that_once_missed_meet_the_targets(regression_table, seed):
    population, why = REGRESSIONS[seed]
    rows = regression_table[regression_table["seed"] == seed]
    assert random_accuracy.misses(rows).empty, f"{why}\n{rows.to_string()}"
    assert (rows["population"] == population).any()


def test_negatives_split_in_some_cells_only_do_not_part_the_igd_cut(tmp_path):
    """Seed 687652803 of another draw (`random_accuracy.py --label "cytopipe fresh draw
    2026-12-03"`; myeloid tissue, 103,492 events): CD45's spillover into IgD spreads the
    negatives of the CD45-bright lymphocytes and monocytes past logicle W 0.5's linear region,
    so they show as two humps, while granulocytes, debris and CD45- events fill the channel's
    dip at 0 (W stays 0.5). The IgD cut fell between the IgD- B cells' two humps (0.14):
    unswitched memory F1 0.68, switched memory 0.60. A valley between the halves of split
    negatives is no gate now (`densities.split_negatives`): 0.91, 0.94."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[687652803])
    assert table["n_events"].iloc[0] == 103_492
    scored = table[table["population"].isin(["b_unswitched_memory", "b_switched_memory"])]
    assert (scored["truth"] >= 50).all()
    assert random_accuracy.misses(table).empty, table.to_string()


def test_debris_smaller_than_the_lymphocytes_does_not_join_them_as_b_cells(tmp_path):
    """Seed 914756409 (label "63b"; lysed blood in B-cell aplasia, 433,123 events, no B
    cell): 6 debris events outside the lymphocyte gate, CD19 0.37-0.47 (sticky), forward
    scatter 0.06-0.10 beside the lymphocytes' peak at 0.26 (SD 0.04), joined the lymphocytes
    as "CD19+ outside the lymphocyte gate" and read as 7 B cells for 0 (the aplasia rule allows
    5). The rescue now takes only events at least as large as the lymphocytes' forward-scatter
    peak - 4 SD (`fsc_lymph`, 0.10): 1 B cell."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[914756409])
    assert table["n_events"].iloc[0] == 433_123
    b = table.set_index("population").loc["b_cells"]
    assert b["truth"] == 0 and b["found"] <= 2, table.to_string()
    assert random_accuracy.misses(table).empty, table.to_string()


def test_monocytes_in_a_cd45_cluster_of_middling_confidence_send_the_gate_to_forward_scatter(
    tmp_path,
):
    """Seed 381695474 (label "63c"; lymphopenic blood, 164,410 events): the CD45 x SSC
    cluster, fitted at confidence 0.51, held 955 monocytes as CD45-bright as the lymphocytes
    and of side scatter as low; forward scatter parts them (0.38 vs 0.21). The other view was
    tried only below 0.5: lymphocytes 0.934. Below 0.7 (`COMPARE_BELOW`): FSC x SSC, 0.98."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[381695474])
    lymph = table.set_index("population").loc["lymphocytes"]
    assert table["n_events"].iloc[0] == 164_410
    assert lymph["f1"] >= 0.97 and "gated on FSC-A x SSC-A" in lymph["flag"], table.to_string()
    assert random_accuracy.misses(table).empty, table.to_string()


def test_igd_dim_unswitched_memory_b_cells_stay_igd_positive_without_igd_negatives(tmp_path):
    """Seed 838599579 (label "62b"; lymphopenic blood after CAR-T, 42,748 events, 346 B
    cells, 4 of them IgD-): no IgD valley, and the naive peak - 2 SD (0.54) went through the
    IgD-dim unswitched memory B cells (IgD median 0.57): 47 of 64 found, the rest switched
    memory (F1 0.85). The last resort now moves below the CD27+ B cells' own IgD edge where
    they are one population no wider than the naive one (`spares`, `anchors.spared_cut`)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[838599579])
    assert table["n_events"].iloc[0] == 42_748
    rows = table.set_index("population")
    assert rows.loc["b_unswitched_memory", "truth"] >= 50
    assert rows.loc["b_unswitched_memory", "f1"] >= 0.95, table.to_string()
    assert random_accuracy.misses(table).empty, table.to_string()


def test_igd_dim_unswitched_memory_b_cells_beside_a_few_switched_ones_are_spared(tmp_path):
    """Seed 838599607 (label "62b"; 2,178 B cells): the CD27+ B cells are 130 IgD-dim
    unswitched memory and 39 IgD- switched memory B cells, two populations by BIC, and their
    peak is the unswitched ones', nearer the naive majority: the last resort moves below them
    (unswitched memory 67 -> 108 found, F1 0.68 -> 0.91). Where their peak is the IgD- one,
    nothing is spared (test_real_gating's seed 421294472)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[838599607])
    rows = table.set_index("population")
    assert rows.loc["b_unswitched_memory", "f1"] >= 0.85, table.to_string()


def test_a_dip_inside_the_upper_half_of_split_negatives_is_not_the_cd27_cut(tmp_path):
    """Seed 236444398 (label "49"; PBMC, 19,875 events, 914 CD20+ B cells, CD27 at gain 0.53
    spread by spillover): the CD27- B cells split into humps at -0.11 and 0.32 (0 at 0.11), and
    a noise dip at 0.23 in the upper one was deeper than the valley at 0.45 above them: naive
    B cells 0.73, unswitched memory 0.49 (the best quadrant reaches 0.93). A dip with fewer
    events between 0 and it than below 0 lies inside the negatives (`split_negatives`)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[236444398])
    assert table["n_events"].iloc[0] == 19_875
    scored = table[table["population"].isin(["b_naive", "b_unswitched_memory"])]
    assert (scored["truth"] >= 100).all()
    assert random_accuracy.misses(table).empty, table.to_string()


def test_two_populations_above_split_negatives_are_told_apart_above_the_split(tmp_path):
    """Seed 758315866 (label "session 50"; lysed blood, 30,358 events, 955 B cells, 289 of
    them CD27+ memory, CD27 at gain 0.72 with spillover x1.9): the naive B cells' CD27 split
    into humps at -0.2 and 0.43, the memory B cells at 0.58 overlap the upper one with no
    dip, and the mixture (BIC) fitted to all B cells parted the negatives' two humps, outside
    the window above them: the last resort went above the memory B cells' peak (unswitched
    memory 0.39, switched 0.48). Fitted to the events above the split, as the lower hump
    mirrors the upper one: 0.87 and 0.90 (best quadrants 0.89, 0.97; the 0.90 target is
    not met here for unswitched memory: the memory B cells' lower tail runs into the naive
    hump)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[758315866])
    assert table["n_events"].iloc[0] == 30_358
    f1 = table.set_index("population")["f1"]
    assert f1["b_naive"] >= 0.95, table.to_string()
    assert f1["b_unswitched_memory"] >= 0.85 and f1["b_switched_memory"] >= 0.88, table.to_string()


def test_monocytes_beside_lymphopenic_lymphocytes_leave_with_the_forward_scatter_view(tmp_path):
    """Seed 81496855 of `random_accuracy.py --label 50b` (lymphopenic after CAR-T, 925,576
    events, 81,169 lymphocytes, monocytes as CD45-bright as the lymphocytes and overlapping
    them in SSC): CD45 x SSC (confidence 0.63) took 11,850 of 39,845 monocytes (lymphocytes F1
    0.930), and FSC x SSC, which holds the lineage+ events better (lineage F1 0.747 against
    0.706), was not kept by a margin of 0.05; at 0.03: 0.968 (since session 53 a view better
    by more than one event is kept)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[81496855])
    f1 = table.set_index("population")["f1"]
    assert table["n_events"].iloc[0] == 925_576
    assert f1["lymphocytes"] >= 0.95 and f1["t_cells"] >= 0.99, table.to_string()


def test_a_view_that_holds_the_lineage_events_better_by_a_little_is_kept(tmp_path):
    """Seed 990020163 of `random_accuracy.py --label "session 53b"` (lymphopenic after CAR-T,
    24,682 events: 1,767 lymphocytes beside 3,679 monocytes): FSC x SSC held the lineage+
    events better than CD45 x SSC (lineage F1 0.805 against 0.780), by less than the 0.03 a
    better view needed until session 53. CD45 x SSC kept 154 monocytes and left out 177 NK
    and T cells of higher side scatter: lymphocytes F1 0.904, T cells 0.982; now 0.986."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[990020163])
    assert table["n_events"].iloc[0] == 24_682
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["f1"] >= 0.97, table.to_string()
    assert "gated on FSC-A x SSC-A" in lymph["flag"], lymph["flag"]


def test_nk_cells_beside_monocytes_in_ssc_keep_the_forward_scatter_view(tmp_path):
    """Seed 583954657 (label "40"; lymphopenic blood, 34,819 events): NK cells and monocytes
    overlap in SSC, and neither the CD45 x SSC mixture (confidence 0.06) nor the FSC x SSC one
    (0.13) is confident; both hold the T and B cells alike, and NK cells carry no lineage
    marker. CD45 x SSC was kept, with 84% of the NK cells (lymphocytes F1 0.942). The surer fit
    by VIEW_MARGIN is kept now: forward scatter parts them (0.980)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[583954657])
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["truth"] > 2_000 and lymph["f1"] >= 0.97, table.to_string()
    assert "gated on FSC-A x SSC-A" in lymph["flag"], lymph["flag"]


def test_nk_cells_whose_cd19_spreads_to_the_b_cells_are_not_b_cells(tmp_path):
    """Seed 626712308 (label "40b"; myeloid tissue, 95,578 events): CD38, bright on NK cells,
    spills into CD19 and its compensation spreads their CD19 past the T cells' level up to the
    B cells; no dip is left between them, and the CD19 cut stood at the T cells' level: 145 NK
    cells were B cells (F1 0.937, said only as "a dim stain?"). Where the CD19 cut finds no dip,
    CD3- CD20- events must also clear the NK cells' own CD19 (`cd19_nk`), CD20+ ones only the
    T cells' (the b_cells part "CD19+ CD20+")."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[626712308])
    b = table[table["population"] == "b_cells"].iloc[0]
    assert b["truth"] > 1_000 and b["f1"] >= 0.99, table.to_string()


def test_monocytes_do_not_share_a_component_with_the_lymphocytes(tmp_path):
    """Seed 110104422 of another draw (label 'cytopipe fresh draw session 32'; PBMC, 48,540
    events, monocytes as CD45-bright as the lymphocytes): with at most 3 components in CD45 x
    SSC, the NK and B cells and the monocytes made one, joined to the T cells' (lymphocytes
    F1 0.905, confidence 1.0: silent). BIC choosing among up to 4 keeps the monocytes apart."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[110104422])
    assert table["n_events"].iloc[0] == 48_540
    assert random_accuracy.misses(table).empty, table.to_string()


def test_a_cd27_positive_majority_is_not_called_negative(tmp_path):
    """Seed 408324723 of another draw (label 'cytopipe fresh draw session 32b'; an export
    pre-gated on lymphocytes, 128,749 events): the naive B cells spread flat in CD27 below the
    memory B cells' peak, the sample's highest. With no valley, shoulder or turn, the last
    resort (that peak + 3 SD) called every memory B cell CD27-: unswitched and switched memory
    0, double negative 0.14, and nothing listed the sample. Two populations by BIC now come
    first (`split`). Without them (the template's cd27 with `split` off), that peak lies above
    the T cells' own CD27 valley, so the majority is CD27+: the cut is 3 SD below it, and all
    four quadrant subsets say they are unlike the template (the switched ones through
    cd27_switched, which takes that cut as its reference)."""
    repo = random_accuracy.REPO
    raw = yaml.safe_load((repo / "config" / "gating.yaml").read_text())
    raw["thresholds"]["cd27"].pop("split")
    unsplit = tmp_path / "unsplit.yaml"
    unsplit.write_text(yaml.safe_dump(raw))
    for template, least in ((repo / "config" / "gating.yaml", 0.75), (unsplit, 0.55)):
        table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), template, [408324723])
        assert table["n_events"].iloc[0] == 128_749
        f1 = table.set_index("population")["f1"]
        assert f1["b_switched_memory"] >= 0.90 and f1["b_unswitched_memory"] >= least, table
        assert f1["b_naive"] >= 0.90 and f1["b_double_negative"] >= 0.5, table
    path = tmp_path / "variant_408324723.fcs"
    pre = preprocess(str(path), load_panel(repo / "config" / "panel.yaml"), load_config(None))
    columns = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    said = unlike_template(gate("v", columns, load_template(unsplit), pre.zeros).stats)
    quadrants = ("b_naive", "b_unswitched_memory", "b_switched_memory", "b_double_negative")
    assert "the majority is positive" in said and all(p in said for p in quadrants), said


def test_cd27_memory_b_cells_without_a_valley_are_split_from_the_naive_ones(tmp_path):
    """Seed 408324690 of another draw (label 'cytopipe fresh draw session 32b'; lymphoid
    tissue, 12,531 events, CD27 at a low gain): the naive B cells' CD27 spreads wide around the
    T cells' own CD27 valley, the memory B cells a hump above with a dip too shallow for a
    valley, and the negatives' window holds the memory cells' lower half, so the search
    started above them. The last resort, the naive peak + 3 SD of that wide spread, put CD27
    at the window's top: unswitched memory 0 of 163. Two populations by BIC (`split`) cut
    between them (the best quadrant reaches 0.82)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[408324690])
    assert table["n_events"].iloc[0] == 12_531
    f1 = table.set_index("population")["f1"]
    assert f1["b_unswitched_memory"] >= 0.70 and f1["b_naive"] >= 0.95, table


def test_a_panel_without_cd3_cuts_cd19_and_cd20_on_the_lymphocytes(tmp_path, repo):
    """B-cell panels often carry no CD3. Seeds 5012, 5021 and 5024 (10-30 k events), gated with
    a panel without CD3: the CD19 cut on all lymphocytes (`cd19_lymph`) took the 95% level of
    the negatives' window, which held the B cells of a dim CD19 stain (lysed blood at CD19
    gain 0.54, myeloid tissue): B cells 0.004 and 0; it starts no further out than the
    lymphocytes' majority peak + 4 SD now (0.998, 0.987). CD20 had no cut at all (cd20 is
    placed on CD3- lymphocytes), so every B cell passed as CD20+ and the subsets were cut
    with the CD20- ones among them: unswitched and switched memory 0, double negative 0.60 in
    the pre-gated 5021; CD20 is cut on all lymphocytes there (`cd20_lymph`): 0.90, 0.95, 0.95."""
    path = real_gating.panel_without(("CD3",), tmp_path)
    table = random_accuracy.evaluate(
        tmp_path, 3, SMALL_EVENTS, seeds=[5012, 5021, 5024], panel=path
    )
    f1 = table.set_index(["seed", "population"])["f1"]
    assert f1[5012, "b_cells"] >= 0.95 and f1[5024, "b_cells"] >= 0.95, table.to_string()
    assert f1[5021, "b_switched_memory"] >= 0.90, table.to_string()
    assert f1[5021, "b_double_negative"] >= 0.90, table.to_string()


def test_a_panel_without_cd20_cuts_cd27_above_the_cd27_negative_b_cells(tmp_path, repo):
    """Seeds 6003, 6006 and 6022 (10-30 k events) gated with a panel without CD20: the B-cell
    subsets are cut on all B cells, plasmablasts (CD27++) among them, and the CD27 search took
    the deepest dip, the one between memory B cells and plasmablasts: unswitched memory 0 in
    6003 and 6022, switched memory 0 in all three. A deepest dip with under 30% of the events
    above it that a qualifying dip below it has parts a bright few: the lower one is the cut
    now (`bright_minority`). In 6003 the memory B cells are the majority and the negatives'
    window held their lower half, so the search started above them; it starts from the
    window's own peak where the sample's lies beyond the window. Each quadrant is now within
    0.05 of the best quadrant cuts on the same B cells (plasmablasts count as switched memory
    by the quadrant's definition here, so even the best cuts stay near 0.85-0.9)."""
    path = real_gating.panel_without(("CD20",), tmp_path)
    table = random_accuracy.evaluate(
        tmp_path, 3, SMALL_EVENTS, seeds=[6003, 6006, 6022], panel=path
    )
    quadrants = table[table["best_quadrant_f1"].notna() & (table["truth"] >= 50)]
    assert len(quadrants) >= 10, table.to_string()
    # the best cuts of all four quadrants together where measured (a miss), else the best
    # cut of each alone
    best = quadrants["joint_quadrant_f1"].fillna(quadrants["best_quadrant_f1"])
    short = quadrants[quadrants["f1"] < best - 0.05]
    assert short.empty, short.to_string()


def test_lymphopenic_blood_without_cd3_or_cd45_finds_its_lymphocytes_by_cd27(tmp_path, repo):
    """Seeds 6019 and 6026 (lymphopenic blood after CAR-T, B cells absent) gated with a panel
    without CD3 and CD45: no lineage marker showed where the lymphocytes sit, and the lowest
    side-scatter cluster of 10% of the events was the granulocytes (lymphocytes 0.002 in
    both). CD27, on most T cells and on no myeloid cell, stands in for CD3 there (`stand_in`):
    0.977 and 0.917."""
    path = real_gating.panel_without(("CD3", "CD45"), tmp_path)
    table = random_accuracy.evaluate(tmp_path, 2, SMALL_EVENTS, seeds=[6019, 6026], panel=path)
    lymph = table[table["population"] == "lymphocytes"].set_index("seed")["f1"]
    assert (lymph >= 0.90).all(), table.to_string()


def test_myeloid_tissue_without_cd3_or_cd45_keeps_its_monocytes_out_of_the_lymphocytes(
    tmp_path, repo
):
    """Seed 6011 (myeloid tissue: 6,697 lymphocytes beside 17,040 monocytes and 44,255
    granulocytes) gated without CD3 and CD45. The mixture gave the lymphocytes and the monocytes
    components of their own, but with the B cells as the only lineage+ events no share could
    keep the monocytes out (`share_needs`), and they joined without a dip: 16,877 monocytes
    inside, F1 0.436 at confidence 1.0, nothing said. With CD27 standing in for CD3, the
    monocytes' cluster is under a quarter as lineage+-rich and stays out: 0.900 (985
    monocytes left inside, the gate at low confidence)."""
    path = real_gating.panel_without(("CD3", "CD45"), tmp_path)
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 300_000), seeds=[6011], panel=path)
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["truth"] > 6000 and lymph["f1"] >= 0.85, table.to_string()
    assert "backgated with CD27 for CD3" in lymph["flag"], lymph["flag"]


def test_monocytes_joined_without_a_dip_send_the_gate_to_forward_scatter(tmp_path):
    """Seed 925207059 (label "41b"; lysed blood, 154,560 events): the monocytes are as
    CD45-bright as the lymphocytes and a shoulder of them in side scatter, modelled with the
    lymphocytes' upper tail by one component joined without a dip; 8,487 monocytes were
    lymphocytes (F1 0.931) at confidence 1.0, nothing said, while forward scatter parts them.
    A gate whose lineage+ share is under 0.7 (`compare_share`, since session 56 `refine_share`;
    here 0.66) now has the other view placed too, and it holds the lineage+ events better (F1
    0.80 -> 0.86): 0.998."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[925207059])
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["truth"] > 50_000 and lymph["f1"] >= 0.99, table.to_string()
    assert "gated on FSC-A x SSC-A" in lymph["flag"], lymph["flag"]


def test_lymphocytes_in_a_cluster_under_70_percent_lineage_positive_are_searched_inside_it(
    tmp_path,
):
    """Seed 294108512 (label "session 56"; myeloid tissue, 116,981 events, the lymphocytes 3%
    of the leukocytes beside three times as many monocytes): their mixture component took the
    monocytes' low side-scatter tail too (SD 0.44 in log SSC for the lymphocytes' own 0.17),
    64% of its events lineage+, and 1,331 monocytes were lymphocytes (F1 0.814, where boosting
    on FSC, SSC and CD45 reaches 0.957). Under `refine_share` the cluster is fitted again
    inside (it was 0.6, and the gates under 0.7 were only compared with the other view)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[294108512])
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["truth"] == 3_020 and lymph["f1"] >= 0.95, table.to_string()


def test_a_component_half_as_lineage_rich_joined_to_the_lymphocytes_is_doubted(tmp_path):
    """Seed 376564476 (label "session 56c"; PBMC, 72,854 events): a wide component (SD 0.45 in
    log SSC for the lymphocytes' 0.21) of monocytes and the lymphocytes' upper tail, 46%
    lineage+ beside the lymphocytes' 90%, joined them without a dip: 3,581 monocytes inside,
    F1 0.958 at confidence 0.61, nothing said. A member under 60% as lineage+-rich as the
    chosen component (`mixed_share`) makes the gate doubtful, so FSC x SSC is placed too and
    kept: 0.996."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[376564476])
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["truth"] == 42_113 and lymph["f1"] >= 0.98, table.to_string()
    assert "gated on FSC-A x SSC-A" in lymph["flag"], lymph["flag"]


def test_monocytes_in_a_joined_component_are_said_where_no_view_parts_them(tmp_path):
    """Seed 17615216 (label "session 56e"; an export pre-gated on live singlets, 865,170
    events): a component 54% as lineage+-rich as the lymphocytes' joined them with 34,357 of
    34,403 monocytes (F1 0.942, the scatter bound 0.987) at confidence 1.0, nothing said.
    Neither view does better here, but the gate now says so (`mixed_share`)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[17615216])
    lymph = table[table["population"] == "lymphocytes"].iloc[0]
    assert lymph["confidence"] < 0.5 and "as lineage+-rich" in lymph["flag"], lymph.to_dict()


def test_cd20_negative_b_cells_that_are_all_plasmablasts_are_one_population(tmp_path):
    """Seed 911440852 (label "44"; lysed blood, 108,808 events): its ~100 CD20- B cells are
    nearly all plasmablasts (CD38 0.86-0.95, above the transitional level 0.69). BIC fit a
    narrow Gaussian at their top beside their body (D 2.3), and the CD38 cut went between
    them: 28 plasmablasts found of 113. Two populations that are both above the reference cut
    are one positive population, cut at its lower edge (`mixture.both_positive`)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[911440852])
    pb = table[table["population"] == "plasmablasts"].iloc[0]
    assert pb["truth"] >= 100, table.to_string()
    assert random_accuracy.misses(table).empty, table.to_string()


def test_a_cd27_peak_of_a_few_naive_b_cells_is_no_positive_majority(tmp_path):
    """Seed 140309917 (label "44b"; lymphopenic post-CAR-T blood, 128,325 events, 151 B
    cells, nearly all naive and transitional): their CD27 (median 0.17) peaks at 0.30 in so
    few events, and that peak lay 2 SDs above the T cells' CD27 valley (0.23), so the majority
    was called CD27+ and cut at that valley: 48 naive B cells became unswitched memory (naive
    0.80). A positive majority needs most events above that valley too."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[140309917])
    naive = table[table["population"] == "b_naive"].iloc[0]
    assert naive["truth"] >= 100 and naive["f1"] >= 0.95, table.to_string()


def test_a_last_resort_past_the_templates_window_says_so(tmp_path):
    """Seed 309542397 (label "44c"; an export pre-gated on leukocytes, 139,392 events): the
    memory B cells (27%, CD27 0.38) are a shoulder on the naive ones (0.13) with no dip, and the
    naive peak's SD, widened by that shoulder, put the last resort (peak + 3 SD) at 0.79, past
    the template's window: the cut at its edge (0.60) called every memory B cell CD27- and
    nothing said so (no joint quadrant reaches the target there: 0.69). A last resort the
    window clamps marked the sample unlike the template; since session 70 the last resort
    stops at the CD27+ T cells' peak (0.33) first, and a majority spread that far is said."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[309542397])
    assert table["n_events"].iloc[0] == 139_392
    repo = random_accuracy.REPO
    pre = preprocess(
        str(tmp_path / "variant_309542397.fcs"),
        load_panel(repo / "config" / "panel.yaml"),
        load_config(None),
    )
    columns = {m: v[pre.qc_pass] for m, v in pre.columns.items()}
    specs = load_template(repo / "config" / "gating.yaml")
    said = unlike_template(gate("v", columns, specs, pre.zeros).stats)
    assert "lies past the reference peak 0.33" in said and "b_unswitched_memory" in said, said


def test_a_last_resort_held_at_the_windows_edge_counts_a_range_not_a_certain_zero(tmp_path):
    """Seed 952069028 (label "session 58b"; PBMC, 10,216 events, CD27 at half gain spread by
    CD24's spill): no structure in the B cells' CD27, the last resort (peak 0.17 + 3 SD) at
    0.71, held at the window's edge 0.60 above every B cell. It read 0 unswitched memory B
    cells (truth 162) with a range of 0-0, and 0 switched memory ones (85), 0-0, taken from
    that cut: as if both were certain. The range of a held cut reaches where its valley search
    started, and a cut taken from it moves as it does. Gated without CD3: with it, the last
    resort stops at the CD27+ T cells' peak inside the window (142 found, session 70)."""
    random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[952069028])
    repo = random_accuracy.REPO
    path = tmp_path / "variant_952069028.fcs"
    pre = preprocess(str(path), load_panel(repo / "config" / "panel.yaml"), load_config(None))
    columns = {m: v[pre.qc_pass] for m, v in pre.columns.items() if m != "CD3"}
    stats = gate("v", columns, load_template(repo / "config" / "gating.yaml"), pre.zeros).stats
    rows = stats.set_index("population")
    truth = pd.Series(read_truth(path)["population"]).value_counts()
    for pop in ("b_unswitched_memory", "b_switched_memory"):
        assert rows.loc[pop, "count"] == 0
        assert rows.loc[pop, "count_cut_high"] >= truth[pop] / 2, rows.loc[pop]
    said = unlike_template(stats)
    assert "b_unswitched_memory: its count ranges 0-" in said, said
    assert "lies past the template's window" in said, said


def test_the_dip_below_dim_b_cells_is_read_from_a_density_whole_at_its_edge(tmp_path):
    """Seed 165802711 (label "45"; lymphoid tissue, 161,330 events, 44,000 B cells with a dim
    CD19): the B cells' peak (0.61) stands above the T cells' level (0.28), and their cut is
    the least density between the negatives' centre and that peak. That density was smoothed
    on a histogram starting at the centre, so its first bins held half the events they should,
    and that edge was the least: the cut went to the T cells' level, "no dip below it", and
    took 665 NK cells as B cells (F1 0.990). Read on a range that starts 4 bandwidths lower,
    the dip at 0.38 is the cut (`anchors.risen_population`)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[165802711])
    b = table[table["population"] == "b_cells"].iloc[0]
    assert abs(b["found"] - b["truth"]) <= 0.005 * b["truth"], table.to_string()


def test_plasmablasts_pinned_at_cd38s_top_count_at_an_excess_like_those_below_it(tmp_path):
    """Seed 666994420 (label "session 54c"; PBMC, 172,262 events, 168 plasmablasts, CD38 at
    gain 1.94): 82 of them sit at CD38's top and read viability 0.61 (CD38's spill
    under-compensated) where the plasmablasts below the top read 0.14. With only the floors to
    bound their CD38, each may be dead or alive: 98 counted, F1 0.73, said. Their CD38 lies as
    far above the top as makes their viability, CD19 and CD20 like those below it
    (`saturated.plausible_excess`): 147."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[666994420])
    pb = table[table["population"] == "plasmablasts"].iloc[0]
    assert pb["f1"] >= 0.9 and pb["found"] >= 0.85 * pb["truth"], table.to_string()


def test_a_last_resort_past_the_window_gives_way_to_a_plateau_and_a_peak(tmp_path):
    """Seed 774509083 (label "session 55e"; myeloid tissue, 621,791 events, 1,728 CD20+ B
    cells): the naive B cells' CD27 is a flat plateau from -0.1 to 0.3 beside the memory B
    cells' peak at 0.43, with no valley, and three Gaussians make one population of them. The
    last resort, the plateau's peak + 3 SD (0.85), lay past the search window and was cut at
    its end, 0.60: none of the 195 unswitched memory B cells counted. A plateau needs two
    Gaussians: with up to four, where the alternative is that cut, CD27 parts at 0.355 (the
    best single cut 0.36; the best quadrant reaches 0.80)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[774509083])
    row = table[table["population"] == "b_unswitched_memory"].iloc[0]
    assert row["truth"] > 150 and row["f1"] >= 0.75, table.to_string()


def test_plasmablasts_whose_cd19_cd38s_spill_spreads_below_the_dim_cut_are_said(tmp_path):
    """Seed 830809179 (label "session 55"; lymphoid tissue, 229,284 events, 4,220
    plasmablasts): CD38 at gain 1.94 spills 0.53 of itself into a CD19 at gain 0.50, and the
    spread that spill leaves after compensation takes a fifth of the plasmablasts' dim CD19
    below the CD19-dim cut (the NK cells' 75% quantile): 3,071 counted, nothing said. Below
    that cut a cell is CD19- as far as the stain can tell (a CD19- plasma cell, which CD19
    CAR-T spares, looks the same), so they stay out; the plasmablasts now say how many
    CD20- CD27++ CD38++ lymphocytes lie there and to check CD38's compensation into CD19.
    Seed 830809165 (lymphoid tissue, 3,376 plasmablasts, 11 below the cut) says nothing."""
    from cytopipe.gating.sample import gate_events

    random_accuracy.evaluate(tmp_path, 2, (10_000, 1_000_000), seeds=[830809179, 830809165])
    repo = random_accuracy.REPO
    specs = load_template(repo / "config" / "gating.yaml")
    said = {}
    for seed in (830809179, 830809165):
        path = tmp_path / f"variant_{seed}.fcs"
        pre = preprocess(str(path), load_panel(repo / "config" / "panel.yaml"), load_config(None))
        gated, masks = gate_events("v", pre.columns, pre.qc_pass, specs, pre.info, pre.at_top)
        said[seed] = unlike_template(gated.stats)
    of_pb = [why for why in said[830809179].split(" | ") if "plasmablasts" in why.split(": ")[0]]
    assert any("CD19- CD20- CD27++ CD38++ lymphocytes" in why for why in of_pb), said
    assert any("check the CD38 -> CD19 compensation" in why for why in of_pb), said
    assert "CD38 -> CD19" not in said[830809165], said


def test_plasmablasts_undecided_at_the_live_gate_are_said_to_be_uncounted(tmp_path):
    """Seed 409296064 (label "session 51"; an export pre-gated on lymphocytes, 261,754 events,
    199 plasmablasts, CD38 at gain 1.95): 134 events sit at CD38's top, most of them
    plasmablasts, and CD38's spill into the viability stain, under-compensated above the
    top, makes their viability read as high as the live cut. Their true viability lies
    anywhere down to the stain's floor: undecided at the live gate (98 among 260,064), not
    counted below it. Undecided was only said of the gate where the box straddled a cut, so
    the plasmablasts, 67 found, said nothing. Maybe in a parent is maybe in its children:
    the plasmablasts now say how many more may be theirs."""
    from cytopipe.gating.sample import gate_events

    random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[409296064])
    repo = random_accuracy.REPO
    path = tmp_path / "variant_409296064.fcs"
    pre = preprocess(str(path), load_panel(repo / "config" / "panel.yaml"), load_config(None))
    specs = load_template(repo / "config" / "gating.yaml")
    gated, masks = gate_events("v", pre.columns, pre.qc_pass, specs, pre.info, pre.at_top)
    said = unlike_template(gated.stats)
    assert masks["plasmablasts"].sum() < 120, said  # of 199: the rest are undecided
    assert "plasmablasts: " in said and "may belong here" in said, said


def test_cd20_bright_b_cells_in_aplasia_count_where_cd19_is_as_dim_as_the_nk_cells(tmp_path):
    """Seed 758120575 (label "session 69"; pre-gated lymphocytes in B-cell aplasia, 13,031
    events, CD19 at 0.55 of its gain): 10 of the 11 B cells are lymphocytes, their CD19
    0.48-0.61 among the NK cells' spread (up to 0.53), so CD19 shows no valley and its cut
    went where the events run out (0.60): 1 B cell found, which reads as deeper aplasia than
    the sample's. Their CD20 (0.71-0.83; NK cells at most 0.41) tells them apart: where CD19
    shows no valley, a CD20+ B cell need only lie beyond the negatives' peak + 4 SD in both
    stains (`cd19_beyond_t` 0.44, `cd20_beyond_nk` 0.52): 11 found, 10 of them B cells."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[758120575])
    b = table.set_index("population").loc["b_cells"]
    assert b["truth"] == 11, table.to_string()
    assert 8 <= b["found"] <= 2 * b["truth"] + 5 and b["f1"] >= 0.8, table.to_string()


def test_nk_cells_past_both_b_cell_edges_of_a_million_events_are_no_b_cells(tmp_path):
    """Seed 494158706 (label "session 69b"; lymphopenic in aplasia, 657,874 events, 2 B
    cells, CD19 at 0.56 of its gain): with no CD19 valley, 6 of 20,446 NK cells lie past the
    T cells' CD19 peak + 4 SD (0.50) and the CD20 edge (0.34, the 99.9% quantile + 0.05): as
    B cells they read as 8 for 2. Their own CD20 peak + 4 SD (0.59) leaves them out: 2."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[494158706])
    b = table.set_index("population").loc["b_cells"]
    assert b["truth"] == 2 and b["found"] <= 3, table.to_string()


def test_memory_b_cells_count_where_cd27_is_too_dim_for_a_valley(tmp_path):
    """Seed 35257542 (label "session 70b"; myeloid tissue, 804 CD20+ B cells, CD27 at 0.66 of
    its gain): the naive B cells' CD27 is a wide plateau with no valley above it, and the
    naive 'peak' + 3 SD lay at 0.77, past every B cell: none of the 110 unswitched and 117
    switched memory B cells found. 21% of the B cells lie beyond the CD27+ T cells' peak
    (0.34), the memory B cells' level, so the last resort goes no further: 84 and 82 found;
    then cd38_tr's 2-D split must not part the memory B cells left among the IgD+ 'CD27-'
    ones from the naive ones (369 transitional found for 12). Seed 35257543 (post-CAR-T
    blood, 1 unswitched memory B cell): only the naive and transitional B cells' tail lies
    beyond that peak (6.4%), and the last resort stands (at the peak: 27 found)."""
    seeds = [35257542, 35257543]
    table = random_accuracy.evaluate(tmp_path, 2, (10_000, 1_000_000), seeds=seeds)
    rows = table.set_index(["seed", "population"])
    for pop in ("b_unswitched_memory", "b_switched_memory"):
        assert rows.loc[(35257542, pop), "f1"] >= 0.75, table.to_string()
    tr = rows.loc[(35257542, "b_transitional")]
    assert tr["found"] <= 2 * tr["truth"] + 5, table.to_string()
    unswitched = rows.loc[(35257543, "b_unswitched_memory")]
    assert unswitched["found"] <= 2 * unswitched["truth"] + 5, table.to_string()


def test_a_lone_igd_negative_population_near_the_cd27_positive_t_cells_is_switched_memory(
    tmp_path,
):
    """Seed 35257543 (label "session 70b"; post-CAR-T blood): the CD27 cut of all CD20+ B
    cells is a last resort past every B cell (0.60), and the 107 IgD- B cells, nearly all
    switched memory (102), show one population at CD27 0.41 with no valley. Judged by that
    last resort they were all double negative (switched memory 0 found). Three quarters of
    them lie past halfway from the T cells' CD27 valley (0.23, the level the cut never goes
    under) to their CD27+ peak (0.39): they are the CD27+ population, cut at their own lower
    edge. The
    other side: the real file's transitional-rich reconstitution (IgD-dim transitional B
    cells just above that valley, openCyto's double negative) in test_real_gating.py's
    `test_other_b_cell_compositions_are_cut_where_opencyto_cuts`."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[35257543])
    switched = table.set_index("population").loc["b_switched_memory"]
    assert switched["f1"] >= 0.90, table.to_string()
    assert "one population above halfway from cd27_t" in switched["flag"], table.to_string()


def test_a_quadrant_cut_through_the_switched_memory_b_cells_gives_way_to_their_own(tmp_path):
    """Seed 421294486 (label "session 65"; lymphoid tissue, 58,736 events): the CD27 valley of
    all CD20+ B cells (0.30) lies in the low tail of the switched memory B cells, whose
    density there is 7x that at the IgD- B cells' own CD27 valley (0.23): double negative
    0.827 where the best quadrant gives 0.97. Where the shared cut runs through a population
    the IgD- B cells' own valley parts (`own_through`), that valley cuts them. The other
    side: the real Lyoplate file's IgD- B cells show only a shallow dip beside the shared cut
    (1.2x), and it stays one quadrant there, as openCyto cuts it
    (test_real_gating.py's subset targets)."""
    table = random_accuracy.evaluate(tmp_path, 1, (10_000, 1_000_000), seeds=[421294486])
    dn = table.set_index("population").loc["b_double_negative"]
    assert dn["truth"] >= 50 and dn["f1"] >= 0.90, table.to_string()
    assert "runs through these events' own CD27 population" in dn["flag"], table.to_string()
    assert random_accuracy.misses(table).empty, table.to_string()
