"""Random combinations of real-file perturbations: silent failures no single row shows.

`real_gating.py` changes the real Lyoplate file one way at a time (and `--stress` a
composition with one instrument setting); each row is a failure found and fixed. A lab's file
differs in several ways at once, and the matrix is rarely exactly right: the combinations
between the rows are where a cut can still fall silently (session 23: the matrix at x1.15 and
x1.2, between the measured x0.85 and x1.3, read unswitched memory 0.54-0.56, 'as the
template'). Each file draws, from a seed nobody picks:

- a composition: 0-2 of `real_gating.recomposable`'s pools thinned (naive, memory, T cells,
  lymphocytes, events outside openCyto's scatter gate, all events);
- one stain's compensated signal x 0.3-2.5 (another reagent), spilled back with the matrix;
- every fluorescence signal x 0.4-2.5, forward and side scatter each x 0.55-1.6 (another
  instrument or voltage; clipped at the range);
- the file's `$SPILLOVER` off-diagonal values x 0.85-1.15 (a matrix from other controls);
- each of viability, CD20, IgD, CD27, CD38 and CD24 left out of the panel with a 10% chance;
- with a 30% chance, Gaussian noise of SD 50-300 on every compensated stain (another
  instrument's wider negatives), and with a 10% chance the file written compensated, its
  negatives set to 0 and no matrix (an export of compensated values);
- with a 5% chance (drawn last, so the other files stay as they were) an export of gated
  data: every stain 0-4095 on a biexponential display scale, the matrix kept, `$PnR` 4096 or
  the acquisition's 262144;
- with a 5% chance (drawn after that) the matrix keyword written transposed (rows for
  columns), which the data must turn back (`preprocess.matrix_orientation`);
- with `--photon`, a 30% chance (drawn after that) of more photon noise on every stain:
  variance 10-100 x its compensated signal (another instrument's fewer photoelectrons per
  unit: bright populations wider, the valleys between them shallower, a bright peak's lower
  side wider on the logicle scale; the noise above widens negatives). An option, so that the
  files of the draws reported before stay as they were;
- with `--donor` (drawn after that), another donor's biology: one population's level of one
  stain x 0.5-2 (naive B cells' IgD, memory B cells' CD27, B cells' CD20 or CD19, T cells'
  CD3), so that cuts placed relative to other populations' positions meet other distances.

Every population is scored against openCyto's gates as `real_gating.py` scores them (CD20+ B
cells within openCyto's scatter gate; subsets of >= 100 events; plasmablasts not), and every
miss is printed with whether the sample said anything: listed as unlike the template, a
gate to review, or a file check (stains gated uncompensated); a missed IgD x CD27 subset also
with the best F1 any pair of cuts reaches on the file (`best_quadrant_f1`), which tells a
misplaced cut from subsets no quadrant parts.

    .venv/bin/python benchmarks/real_fuzz.py [--n 100] [--tsv OUT.tsv]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_gating as rg  # noqa: E402
from random_accuracy import QUADRANTS, best_quadrant_f1, evaluation_seeds  # noqa: E402

from cytopipe.clinical.sample_checks import compensation_notes  # noqa: E402
from cytopipe.config import load_config  # noqa: E402
from cytopipe.gating.sample import gate_events  # noqa: E402
from cytopipe.gating.stats import f1_score, review_rows, unlike_template  # noqa: E402
from cytopipe.gating.template import load_template  # noqa: E402
from cytopipe.ingest.panel import load_panel  # noqa: E402
from cytopipe.preprocess.sample import preprocess  # noqa: E402

SEED_LABEL = "cytopipe real-file fuzz v1"
STAINS = ("CD3", "CD19", "CD20", "IgD", "CD27", "CD38", "CD24")
# stains a lab's panel may lack (each left out with this chance): a population the panel then
# does not allow is skipped with the reason (said, not scored); the rest must still be right
DROPPABLE = ("Live", "CD20", "IgD", "CD27", "CD38", "CD24")
DROPPED = 0.1
THINNED = ("naive", "memory", "t_cells", "lymphocytes", "outside_lymphocytes", "all")
NOISY, NOISE_SD = 0.3, (50, 300)  # noise on every stain (another instrument's negatives) ...
CLIPPED = 0.1  # ... and an export of compensated values that sets negatives to 0
DISPLAY = 0.05  # an export of display-scale channel values (0-4095), the matrix kept
TRANSPOSED = 0.05  # the matrix keyword written transposed (rows for columns)
SPREAD, PHOTON = 0.3, (10, 100)  # photon noise: variance per unit of signal
# --donor: (stain, `real_gating.recomposable` pool) whose level differs by a factor in DONOR
DONOR_SHIFTS = (("IgD", "naive"), ("CD27", "memory"), ("CD20", "cd20pos_b_cells"),
                ("CD19", "cd20pos_b_cells"), ("CD3", "t_cells"))  # fmt: skip
DONOR = (0.5, 2.0)


def fuzz_seeds(n: int, label: str = SEED_LABEL) -> range:
    """`n` consecutive seeds from a base hashed from `label`: nobody picks them."""
    return evaluation_seeds(n, label)


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw(
    rng: np.random.Generator,
    pools: dict[str, np.ndarray],
    photon: bool = False,
    donor: bool = False,
) -> tuple[np.ndarray, dict]:
    """Which events stay, and the perturbations of one file (`photon`: photon noise too;
    `donor`: one population's level of one stain too)."""
    keep = np.ones(len(next(iter(pools.values()))), dtype=bool)
    params: dict = {}
    for pool in rng.choice(THINNED, rng.integers(0, 3), replace=False):
        share = float(rng.choice([0.05, 0.1, 0.3, 0.5]))
        if pool == "all":
            share = float(rng.uniform(0.15, 0.6))
        if pool == "outside_lymphocytes" and rng.random() < 0.5:
            share = 0.0  # an export pre-gated on lymphocytes
        members = np.flatnonzero(pools[pool] & keep)
        keep[rng.choice(members, int(len(members) * (1 - share)), replace=False)] = False
        params[str(pool)] = round(share, 2)
    # the dead, CD20- and out-of-gate B-lineage events thinned as the live B cells were (at
    # full count beside a tenth of the naive B cells they were scored as our false B cells:
    # `real_gating.recomposed` thins them in early reconstitution for the same reason)
    b_cells, others = pools["cd20pos_b_cells"], pools["other_b_lineage"]
    excess = np.count_nonzero(others & keep) - np.mean(keep[b_cells]) * np.count_nonzero(others)
    if excess >= 1:
        keep[rng.choice(np.flatnonzero(others & keep), int(excess), replace=False)] = False
    params["stain"] = (str(rng.choice(STAINS)), round(log_uniform(rng, 0.3, 2.5), 2))
    params["fluorescence"] = round(log_uniform(rng, 0.4, 2.5), 2)
    params["fsc"] = round(log_uniform(rng, 0.55, 1.6), 2)
    params["ssc"] = round(log_uniform(rng, 0.55, 1.6), 2)
    params["spillover"] = round(float(rng.uniform(0.85, 1.15)), 2)
    params["without"] = [m for m in DROPPABLE if rng.random() < DROPPED]
    params["noise"] = round(log_uniform(rng, *NOISE_SD)) if rng.random() < NOISY else 0
    params["clipped"] = bool(rng.random() < CLIPPED)
    display = not params["clipped"] and rng.random() < DISPLAY
    params["display"] = int(rng.choice([4096, 262144])) if display else 0
    params["transposed"] = bool(rng.random() < TRANSPOSED)  # drawn late: the rest stays
    if photon:
        params["photon"] = round(log_uniform(rng, *PHOTON)) if rng.random() < SPREAD else 0
    if donor:
        stain, pool = DONOR_SHIFTS[int(rng.integers(len(DONOR_SHIFTS)))]
        params["donor"] = (stain, pool, round(log_uniform(rng, *DONOR), 2))
    return keep, params


def write(sample, spill, compensated, keep, params, metadata, path: Path, pools=None) -> Path:
    """The perturbed file: one stain scaled, the stains left out of the panel unstained (no
    signal, no spill) and their channels dropped, noise added to every stain, spilled back,
    gains applied, the matrix off; or, `clipped`, written compensated with its negatives set
    to 0 and no matrix (an export of compensated values); or, `display`, written compensated
    on a 0-4095 display scale with the matrix kept (an export of gated data)."""
    events = compensated.copy()
    stain, factor = params["stain"]
    events[:, sample.pns.index(stain)] *= factor
    if params.get("donor"):  # `pools`: which events each pool holds
        stain, pool, level = params["donor"]
        events[pools[pool], sample.pns.index(stain)] *= level
    for marker in params["without"]:
        events[:, sample.pns.index(marker)] = 0.0
    detectors = [sample.pnn.index(c) for c in spill.channels]
    if params.get("noise"):
        shape = (len(events), len(detectors))
        events[:, detectors] += np.random.default_rng(params["noise"]).normal(
            0.0, params["noise"], shape
        )
    if params.get("photon"):
        signal = np.maximum(events[:, detectors], 0.0)
        spread = np.random.default_rng(params["photon"]).standard_normal(signal.shape)
        events[:, detectors] += spread * np.sqrt(params["photon"] * signal)
    if not params.get("clipped") and not params.get("display"):
        events[:, detectors] = events[:, detectors] @ spill.matrix
    events = rg._scaled(sample, events[keep], params["fluorescence"], params["fsc"], params["ssc"])
    if params.get("clipped"):
        events[:, detectors] = np.maximum(events[:, detectors], 0.0)
    for j in detectors if params.get("display") else ():
        events[:, j] = rg.display_values_of(events[:, j])
    kept = [i for i, s in enumerate(sample.pns) if s not in params["without"]]
    on = [j for j, c in enumerate(spill.channels) if sample.pnn.index(c) in kept]
    among = spill.matrix[np.ix_(on, on)]
    keyword = rg.spillover_keyword(
        [spill.channels[j] for j in on],
        among.T if params.get("transposed") else among,
        params["spillover"],
    )
    matrix = {} if params.get("clipped") else {"$SPILLOVER": keyword}
    shown = params.get("display") or None  # the range a display export declares
    ranges = {f"p{k}r": format(shown if shown and i in detectors else sample.pnr[i], ".0f")
              for k, i in enumerate(kept, start=1)}  # fmt: skip
    rest = {k: v for k, v in metadata.items() if not re.fullmatch(r"p\d+r|\$SPILLOVER", k)}
    pnn, pns = [sample.pnn[i] for i in kept], [sample.pns[i] for i in kept]
    return rg._write_like(sample, events[:, kept], path, {**rest, **ranges, **matrix}, pnn, pns)


def score(seed: int, path: Path, ref: pd.DataFrame, params: dict, specs, panel, cfg) -> list[dict]:
    """F1 per population against openCyto's (targets as `real_gating.recomposed` sets them),
    and what the sample said."""
    pre = preprocess(str(path), panel, cfg)
    gated, masks = gate_events(path.stem, pre.columns, pre.qc_pass, specs, pre.info, pre.at_top)
    said = unlike_template(gated.stats)
    review = ",".join(review_rows(gated.stats)["population"])
    # the cohort page's "file checks": stains gated uncompensated (no matrix in the file), a
    # matrix applied transposed; and its QC warnings (a population running off a stain's top)
    checks = compensation_notes({path.stem: pre.info}).get(path.stem, "")
    if pre.info["qc"]["verdict"] != "pass":
        checks = "; ".join(c for c in (checks, f"QC {pre.info['qc']['verdict']}") if c)
    ranges = gated.stats.set_index("population")[["count_cut_low", "count_cut_high"]]
    rows = []
    live, t_live = ref["Live"].to_numpy(bool), None  # T cells: the CD3 cut, not the live gates
    if "t_cells" in masks and "CD3" not in params["without"]:
        t_live = round(
            f1_score(masks["t_cells"].to_numpy()[live], ref["Live/CD3"].to_numpy(bool)[live]), 3
        )
    for row in rg._lyoplate_rows(f"fuzz {seed}", masks, ref):
        target, pop = row["target"], row["population"]
        # B cells as openCyto defines them (CD19+ CD20+), inside its scatter gate: our CD20-
        # B cells and the CD19+ events beyond that gate weigh more as B cells get fewer;
        # without CD20 in the panel, our B cells (CD3- CD19+) in their place
        b_cells = "b_cells" if "CD20" in params["without"] else "b_cd20pos"
        f1 = row["f1_in_their_lymph"] if pop == b_cells else row["f1"]
        if pop in ({"b_cells", "b_cd20pos"} - {b_cells}) or pop == "plasmablasts":
            target = None
        if pop in gated.skipped:  # the panel does not allow it, and the statistics say why
            target = None
        if row["ref"] < 100:
            target = None
        low, high = ranges.loc[pop] if pop in ranges.index else (None, None)
        miss = target is not None and f1 < target
        rows.append({"seed": seed, "population": row["population"], "ours": row["ours"],
                     "ours_low": low, "ours_high": high,
                     "ref": row["ref"], "f1": round(f1, 3), "target": target,
                     "f1_their_live": t_live if pop == "t_cells" else None, "miss": miss,
                     "best_quadrant_f1": reach(pre.columns, masks, gated, ref, pop) if miss else None,
                     "unlike_template": said, "to_review": review, "file_checks": checks,
                     "params": params})  # fmt: skip
    return rows


def reach(columns, masks: pd.DataFrame, gated, ref: pd.DataFrame, pop: str) -> float | None:
    """For an IgD x CD27 subset: the best F1 against openCyto that an IgD and a CD27 cut
    chosen with its gates give among our CD20+ B cells (`random_accuracy.best_quadrant_f1`).
    Below the target, no placement of the quadrant's cuts meets it on this file (the drawn
    perturbations made the subsets overlap, or our B cells lack theirs): a miss that is not a
    misplaced cut. None for other populations, or a panel without IgD or CD27."""
    igd = gated.result.thresholds.get("igd")
    if pop not in QUADRANTS or igd is None or "CD27" not in columns or "b_cd20pos" not in masks:
        return None
    dims = {m: np.asarray(columns[m], dtype=np.float64) for m in ("IgD", "CD27")}
    parent = masks["b_cd20pos"].to_numpy()
    theirs = ref[rg.LYOPLATE[pop][0]].to_numpy(bool)
    return round(best_quadrant_f1(dims, parent, theirs, pop, igd.value), 3)


def run(
    data: Path, seeds, without: Sequence[str] = (), photon: bool = False, donor: bool = False
) -> pd.DataFrame:
    """One row per (file, population): F1, target, miss, and what the sample said.
    `without`: stains every file lacks besides its own draw (a panel without CD3); `photon`,
    `donor`: draw those perturbations too."""
    sample, ref, metadata, spill, compensated = rg._compensated_source(data)
    pools = rg.recomposable(sample, ref)
    specs = load_template(rg.REPO / "config" / "gating.yaml")
    panel = load_panel(rg.REPO / "config" / "panel.yaml")
    cfg = load_config(None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            keep, params = draw(np.random.default_rng(seed), pools, photon, donor)
            params["without"] += [m for m in without if m not in params["without"]]
            path = Path(tmp) / "f.fcs"
            write(sample, spill, compensated, keep, params, metadata, path, pools)
            theirs = ref[keep].reset_index(drop=True)
            rows += score(seed, path, theirs, params, specs, panel, cfg)
    return pd.DataFrame(rows)


# a missed target's row as printed: our count, its range as the cuts move, openCyto's
MISS_COLUMNS = ["seed", "population", "ours", "ours_low", "ours_high", "ref", "f1",
                "best_quadrant_f1", "params"]  # fmt: skip

T_CELLS_LIVE = 0.95  # the T-cell target, printed beside the B-cell targets


def silent(table: pd.DataFrame) -> pd.DataFrame:
    """Missed targets in files that said nothing: not unlike the template, no gate to review,
    no file check or QC warning on the cohort page."""
    missed = table[table["miss"]]
    quiet = (missed["unlike_template"] == "") & (missed["to_review"] == "")
    return missed[quiet & (missed["file_checks"].fillna("") == "")]


def drawn_table(
    doc: str, run, seeds, options: bool = False
) -> tuple[argparse.Namespace, pd.DataFrame]:
    """A fuzz script's command line (--data, --n files, --tsv, --label): `run(data,
    seeds(n[, label]))`'s table, also written to --tsv where asked. Another --label draws files
    no earlier session has seen. `options`: also real_fuzz's --without MARKER..., --photon and
    --donor, passed to `run`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=rg.DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=100, help="files to draw (default 100)")
    parser.add_argument("--tsv", type=Path, help="also write every row here")
    parser.add_argument("--label", help="the string the seeds are hashed from (default: the "
                        "draw the README reports)")  # fmt: skip
    if options:
        parser.add_argument("--without", nargs="+", default=[], metavar="MARKER",
                            help="stains every file lacks (a panel without CD3)")  # fmt: skip
        parser.add_argument("--photon", action="store_true",
                            help="photon noise on 30%% of the files (another instrument)")  # fmt: skip
        parser.add_argument("--donor", action="store_true",
                            help="one population's level of one stain x0.5-2 (another donor)")  # fmt: skip
    args = parser.parse_args()
    drawn = seeds(args.n) if args.label is None else seeds(args.n, args.label)
    table = (
        run(args.data, drawn, args.without, args.photon, args.donor)
        if options
        else run(args.data, drawn)
    )
    if args.tsv:
        args.tsv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.tsv, sep="\t", index=False)
    return args, table


def main() -> None:
    args, table = drawn_table(__doc__, run, fuzz_seeds, options=True)
    missed, quiet = table[table["miss"]], silent(table)
    print(f"{args.n} files, {table['target'].notna().sum()} targets, {len(missed)} missed "
          f"in {missed['seed'].nunique()} files; {len(quiet)} with nothing said")  # fmt: skip
    t_cells = table[table["population"] == "t_cells"]
    low = t_cells[t_cells["f1_their_live"] < T_CELLS_LIVE]
    print(f"T cells among openCyto's live lymphocytes (not a target): median F1 "
          f"{t_cells['f1_their_live'].median():.3f}, {len(low)} files below {T_CELLS_LIVE}"
          + "".join(f"\n  {r.seed}: {r.f1_their_live:.3f} ({r.ours} vs {r.ref}), {r.params}"
                    for r in low.itertuples()))  # fmt: skip
    held = missed[(missed["ours_low"] <= missed["ref"]) & (missed["ref"] <= missed["ours_high"])]
    print(
        f"missed targets whose count range (cut moves) holds openCyto's count: {len(held)} of "
        f"{len(missed)}"
    )
    beyond = missed[missed["best_quadrant_f1"] < missed["target"]]
    print(f"missed IgD x CD27 subsets no quadrant meets on the file (best_quadrant_f1 below the "
          f"target): {len(beyond)} of {int(missed['best_quadrant_f1'].notna().sum())}")  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        for label, part in (("missed, said", missed.drop(quiet.index)), ("missed, silent", quiet)):
            if len(part):
                print(f"\n{label}:\n{part[MISS_COLUMNS].to_string(index=False)}")


if __name__ == "__main__":
    main()
