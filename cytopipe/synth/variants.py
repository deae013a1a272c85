"""Randomized synthetic files drawn from a seed: a generator the gating cannot be tuned to.

Why: the default generator has one blood composition, two instruments and fixed scatter and
stain positions, so a gating template can fit it and still fail on real files (lymphocyte
pre-gated exports, PBMC, tissue, bone marrow, another lab's voltages and reagents). A variant
draws, from its seed alone,

- a composition class (`CLASSES`): lysed whole blood, PBMC, export pre-gated on lymphocytes,
  export pre-gated on CD45+ or on live singlets, lymphoid tissue, myeloid tissue, lymphopenic
  post-CAR-T blood (B-cell aplasia or early reconstitution), with its fractions randomized;
  B-cell aplasia (0-15 B cells in the tube) in every other lymphopenic file and in a quarter
  of the blood files (whole blood, PBMC and their exports);
- scatter: a detector gain for FSC and SSC, and per cell group (lymphocytes, monocytes,
  granulocytes, CD45- events) a position factor and a shape factor (log-spread);
- stains: per marker a separation factor (positive/negative distance: only stained cells
  brighten), an extra spread of the positive cells, and a gain per fluorescence detector;
- spillover strength (global factor times per-entry jitter), detector noise, the base
  instrument (A or B: names, channel order, range), and the event count (log-uniform).

The class is `CLASSES[seed % len(CLASSES)]`, so consecutive seeds cover every class. Each file
keeps its per-event truth (`NAME.truth.parquet`) and records its class and parameters in
`NAME.variant.json` beside it. The default generator is untouched: variants only pass a
modified `Instrument` and a `signals` model to `simulate_sample`.

Approximations: separation and spread act on the (stain + autofluorescence) signal of stained
cells of each population (autofluorescence is ~1% of a stain); dead events and doublets, built
from random cells inside the biology, get only the tube's mean scatter shift and (dead events)
the viability dye's separation, not the other stain changes (the singlet and viability gates
remove them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cytopipe.errors import CytopipeError
from cytopipe.synth.biology import pre_spill_signals
from cytopipe.synth.composition import blood_composition, composition_counts
from cytopipe.synth.model import (
    B_SUBSETS,
    BASELINE_B_SUBSETS,
    INSTRUMENTS,
    LYMPHOCYTES,
    MARKER_COLUMN,
    MARKERS,
    PHENOTYPES,
    POPULATION_CODE,
    SCATTER_BY_POPULATION,
    Instrument,
)
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import SimulatedSample, simulate_sample

CLASSES: tuple[str, ...] = (
    "lysed_blood",
    "pbmc",
    "pregated_lymphocytes",
    "pregated_leukocytes",  # on CD45+ or on live singlets (`pregate` parameter)
    "lymphoid_tissue",
    "myeloid_tissue",
    "lymphopenic_post_cart",
)
EVENTS_RANGE = (10_000, 1_000_000)  # log-uniform

# Randomization ranges, (low, high) log-uniform unless said otherwise. Wide enough to hold
# what labs differ by (voltages, reagent lots, cytometers), narrow enough that a cytometrist
# would still gate every file by eye.
# Scatter voltages as a lab sets them: where the lymphocytes' median sits, as a fraction of the
# range (the default generator: FSC 0.20 / 0.17, SSC 0.057 / 0.069 on instruments A / B).
SCATTER_TARGET = {"FSC": (0.13, 0.28), "SSC": (0.035, 0.075)}
SCATTER_POSITION_SD = {"FSC": 0.08, "SSC": 0.12}  # per cell group, log-normal SD
SCATTER_SHAPE = (0.75, 1.50)  # factor on a group's log-spread
DETECTOR_GAIN = (0.50, 2.00)  # per fluorescence detector (signal and negatives alike)
STAIN_SEPARATION = (0.60, 1.60)  # per marker: stained cells only
STAIN_GROUP_SD = 0.10  # per (cell group, marker) log-normal jitter of the stained level
STAIN_SPREAD = (0.0, 0.25)  # uniform: extra log-SD of stained cells per marker
SPILL_STRENGTH = (0.50, 2.00)  # global factor on the off-diagonal spillover
SPILL_ENTRY_SD = 0.30  # per-entry log-normal jitter
SPILL_MAX = 0.80
PHOTON_FACTOR = (0.50, 2.50)  # factor on the instrument's Poisson-like variance
ELECTRONIC_SD = (0.50, 2.00)  # factor on its electronic noise

SCATTER_GROUPS: Mapping[str, tuple[str, ...]] = {
    "lymphocytes": LYMPHOCYTES,
    "monocytes": ("monocyte",),
    "granulocytes": ("granulocyte",),
    "cd45_negative": ("cd45_negative",),
}
_GROUP_OF = {pop: group for group, pops in SCATTER_GROUPS.items() for pop in pops}
# A stain with positive_fraction < 1 marks as stained the cells above this share of its median.
_STAINED_SHARE = 0.3


# --------------------------------------------------------------------------- the biology


@dataclass(frozen=True)
class VariantBiology:
    """A `signals` model for `simulate_sample`: the default biology, reshaped per variant.

    `position`/`shape` map a scatter group to (FSC, SSC) factors on its median and log-spread;
    `separation` maps a marker to the factor on its stained cells, `stain_jitter` maps
    (group, marker) to an extra factor, `spread` a marker to an extra log-SD of stained cells.
    """

    position: Mapping[str, tuple[float, float]]
    shape: Mapping[str, tuple[float, float]]
    separation: Mapping[str, float]
    stain_jitter: Mapping[str, Mapping[str, float]]
    spread: Mapping[str, float]

    def __call__(
        self, codes: np.ndarray, counts: Mapping[str, int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        fsc_a, fsc_h, ssc_a, fluor = pre_spill_signals(codes, counts, rng)
        for pop, group in _GROUP_OF.items():
            idx = np.flatnonzero(codes == POPULATION_CODE[pop])
            if idx.size:
                self._reshape_scatter(pop, group, idx, fsc_a, fsc_h, ssc_a)
                self._restain(pop, group, idx, fluor, rng)
        dead = np.flatnonzero(codes == POPULATION_CODE["dead"])
        fluor[dead, MARKER_COLUMN["viability"]] *= self.separation["viability"]  # the dye's stain
        mixed = np.flatnonzero(np.isin(codes, [POPULATION_CODE[p] for p in ("dead", "doublet")]))
        f_factor, s_factor = self._mean_position(counts)
        fsc_a[mixed] *= f_factor
        fsc_h[mixed] *= f_factor
        ssc_a[mixed] *= s_factor
        return fsc_a, fsc_h, ssc_a, fluor

    def _reshape_scatter(
        self,
        pop: str,
        group: str,
        idx: np.ndarray,
        fsc_a: np.ndarray,
        fsc_h: np.ndarray,
        ssc_a: np.ndarray,
    ) -> None:
        """Move a population's scatter median and widen/narrow its log-spread; FSC-H follows
        FSC-A so the singlet ratio is kept."""
        sc = SCATTER_BY_POPULATION[pop]
        (f_pos, s_pos), (f_shape, s_shape) = self.position[group], self.shape[group]
        old = fsc_a[idx]
        new = f_pos * sc.fsc * (np.maximum(old, 1.0) / sc.fsc) ** f_shape
        fsc_a[idx] = new
        fsc_h[idx] *= new / np.maximum(old, 1.0)
        ssc_a[idx] = s_pos * sc.ssc * (np.maximum(ssc_a[idx], 1.0) / sc.ssc) ** s_shape

    def _restain(
        self, pop: str, group: str, idx: np.ndarray, fluor: np.ndarray, rng: np.random.Generator
    ) -> None:
        """Brighten or dim the stained cells of a population and widen their spread."""
        for marker, stain in PHENOTYPES[pop].items():
            col = MARKER_COLUMN[marker]
            values = fluor[idx, col]
            stained = (
                np.ones(idx.size, dtype=bool)
                if stain.positive_fraction >= 1.0
                else values > _STAINED_SHARE * stain.median
            )
            factor = self.separation[marker] * self.stain_jitter[group][marker]
            noise = np.exp(self.spread[marker] * rng.standard_normal(int(stained.sum())))
            values[stained] *= factor * noise
            fluor[idx, col] = values

    def _mean_position(self, counts: Mapping[str, int]) -> tuple[float, float]:
        """The tube's count-weighted (geometric) scatter shift, for dead events and doublets."""
        weights = {g: sum(counts.get(p, 0) for p in pops) for g, pops in SCATTER_GROUPS.items()}
        total = sum(weights.values())
        if total == 0:
            return 1.0, 1.0
        logs = np.array([np.log(self.position[g]) * w for g, w in weights.items()]).sum(0)
        f, s = np.exp(logs / total)
        return float(f), float(s)


# --------------------------------------------------------------------------- compositions


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _log_normal(rng: np.random.Generator, sd: float) -> float:
    return float(np.exp(sd * rng.standard_normal()))


def _b_subsets(rng: np.random.Generator, reconstituting: bool = False) -> dict[str, float]:
    """B-subset fractions around the adult baseline, or the transitional/naive-rich mix of
    early reconstitution after CAR-T."""
    mean = dict(BASELINE_B_SUBSETS)
    if reconstituting:
        mean = {**{s: 0.02 for s in B_SUBSETS}, "b_transitional": 0.30, "b_naive": 0.62}
    alpha = np.array([mean[s] for s in B_SUBSETS]) * 40.0 + 0.05
    return dict(zip(B_SUBSETS, (float(v) for v in rng.dirichlet(alpha)), strict=True))


def _blood(rng: np.random.Generator, lymph: float, mono: float, **overrides) -> dict[str, float]:
    """A lysed-blood-like hierarchy with randomized lymphocyte shares and non-cell events.
    Every share is drawn even when a class overrides it, so a class's draws stay aligned."""
    shares = {
        "lymphocytes_of_leukocytes": lymph,
        "monocytes_of_leukocytes": mono,
        "nk_of_lymphocytes": _uniform(rng, 0.05, 0.25),
        "b_of_lymphocytes": _uniform(rng, 0.03, 0.20),
        "b_subsets": _b_subsets(rng),
        "debris": _uniform(rng, 0.01, 0.10),
        "doublet": _uniform(rng, 0.01, 0.06),
        "dead": _uniform(rng, 0.005, 0.06),
        "cd45_negative": _uniform(rng, 0.01, 0.10),
    }
    shares.update(overrides)
    return blood_composition(**shares)


def _lysed_blood(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    return _blood(rng, _uniform(rng, 0.15, 0.45), _uniform(rng, 0.04, 0.12)), {}


def _pbmc(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """Density-gradient cells: granulocytes mostly gone, monocytes enriched, platelets/debris."""
    mono, gran = _uniform(rng, 0.10, 0.30), _uniform(rng, 0.005, 0.05)
    comp = _blood(rng, 1.0 - mono - gran, mono, debris=_uniform(rng, 0.02, 0.12))
    return comp, {}


def _pregated_lymphocytes(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """An export of the lymphocyte scatter gate: no debris, granulocytes or monocytes, so CD45
    has no dim spread; a few doublets, dead and CD45- events fall in the scatter gate."""
    comp = _blood(
        rng,
        1.0,
        0.0,
        debris=0.0,
        doublet=_uniform(rng, 0.0, 0.03),
        dead=_uniform(rng, 0.0, 0.03),
        cd45_negative=_uniform(rng, 0.0, 0.02),
    )
    return comp, {}


def _pregated_leukocytes(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """An export of the CD45+ gate (doublets and dead CD45+ cells remain) or of the live
    singlet gate (CD45- events remain); no debris either way."""
    pregate = str(rng.choice(["cd45", "live_singlets"]))
    lymph, mono = _uniform(rng, 0.15, 0.45), _uniform(rng, 0.04, 0.12)
    if pregate == "cd45":
        extra = {"doublet": _uniform(rng, 0.01, 0.05), "dead": _uniform(rng, 0.005, 0.05)}
        extra["cd45_negative"] = 0.0
    else:
        extra = {"doublet": 0.0, "dead": 0.0, "cd45_negative": _uniform(rng, 0.01, 0.10)}
    return _blood(rng, lymph, mono, debris=0.0, **extra), {"pregate": pregate}


def _lymphoid_tissue(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """Lymph node or spleen: mostly lymphocytes, many B cells, few NK, more dead cells."""
    lymph = _uniform(rng, 0.85, 0.97)
    comp = _blood(
        rng,
        lymph,
        (1.0 - lymph) * _uniform(rng, 0.2, 0.8),
        nk_of_lymphocytes=_uniform(rng, 0.01, 0.06),
        b_of_lymphocytes=_uniform(rng, 0.25, 0.60),
        debris=_uniform(rng, 0.03, 0.15),
        dead=_uniform(rng, 0.03, 0.15),
        doublet=_uniform(rng, 0.02, 0.08),
    )
    return comp, {}


def _myeloid_tissue(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """Bone marrow or lavage: granulocytes and monocytes dominate, few lymphocytes."""
    comp = _blood(
        rng,
        _uniform(rng, 0.03, 0.12),
        _uniform(rng, 0.10, 0.40),
        debris=_uniform(rng, 0.03, 0.15),
        dead=_uniform(rng, 0.02, 0.10),
    )
    return comp, {}


def _lymphopenic_post_cart(rng: np.random.Generator) -> tuple[dict[str, float], dict]:
    """Blood in the first months after CD19 CAR-T: lymphopenia, NK recovering first, B cells
    (unless in aplasia, see `draw_variant`) transitional-rich as in early reconstitution."""
    comp = _blood(
        rng,
        _uniform(rng, 0.02, 0.12),
        _uniform(rng, 0.05, 0.25),
        nk_of_lymphocytes=_uniform(rng, 0.10, 0.40),
        b_of_lymphocytes=_uniform(rng, 0.01, 0.15),
        b_subsets=_b_subsets(rng, reconstituting=True),
    )
    return comp, {}


def _deplete_b_cells(comp: Mapping[str, float], n: int, b_events: int) -> dict[str, float]:
    """B-cell aplasia: the B subsets shrink to `b_events` of the tube's `n` events (their mix
    kept) and T cells take their place, so the lymphocytes stay as they were."""
    b_total = sum(comp[s] for s in B_SUBSETS)
    target = min(b_events / n, b_total)
    out = dict(comp)
    for s in B_SUBSETS:
        out[s] = comp[s] * target / b_total if b_total else 0.0
    out["t_cell"] = comp["t_cell"] + b_total - target
    return out


# Classes of post-CAR-T blood whose donor may be in B-cell aplasia (0-15 B cells in the tube):
# the lymphopenic class every other cycle of seeds, blood and its exports with this chance.
APLASIA_CHANCE = 0.25
APLASIA_B_EVENTS = (0, 15)
_BLOOD_CLASSES = ("lysed_blood", "pbmc", "pregated_lymphocytes", "pregated_leukocytes")

_COMPOSERS = {
    "lysed_blood": _lysed_blood,
    "pbmc": _pbmc,
    "pregated_lymphocytes": _pregated_lymphocytes,
    "pregated_leukocytes": _pregated_leukocytes,
    "lymphoid_tissue": _lymphoid_tissue,
    "myeloid_tissue": _myeloid_tissue,
    "lymphopenic_post_cart": _lymphopenic_post_cart,
}


# --------------------------------------------------------------------------- instrument, biology


def _instrument(rng: np.random.Generator, base: Instrument) -> tuple[Instrument, dict]:
    """The base cytometer with other voltages, spillover strength and detector noise."""
    markers = [c.canonical for c in base.fluorescence]
    detector = {m: _log_uniform(rng, *DETECTOR_GAIN) for m in markers}
    (fsc, fsc_target), (ssc, ssc_target) = (_scatter_gain(rng, base, d) for d in ("FSC", "SSC"))
    strength = _log_uniform(rng, *SPILL_STRENGTH)
    spill = {
        key: float(min(v * strength * np.exp(SPILL_ENTRY_SD * rng.standard_normal()), SPILL_MAX))
        for key, v in base.spill.items()
    }
    photon = _log_uniform(rng, *PHOTON_FACTOR) * base.photon_factor
    electronic = _log_uniform(rng, *ELECTRONIC_SD) * base.electronic_sd
    scatter_gain = {
        "FSC-A": base.scatter_gain.get("FSC-A", 1.0) * fsc,
        "FSC-H": base.scatter_gain.get("FSC-H", 1.0) * fsc,
        "SSC-A": base.scatter_gain.get("SSC-A", 1.0) * ssc,
    }
    inst = replace(
        base,
        spill=spill,
        fluor_gain={m: base.fluor_gain.get(m, 1.0) * detector[m] for m in markers},
        scatter_gain=scatter_gain,
        photon_factor=photon,
        electronic_sd=electronic,
    )
    params = {
        "base_instrument": base.key,
        "detector_gain": detector,
        "scatter_gain": {"FSC": fsc, "SSC": ssc},
        "lymphocyte_scatter_target": {"FSC": fsc_target, "SSC": ssc_target},
        "spill_strength": strength,
        "spillover": {f"{s}->{d}": v for (s, d), v in spill.items()},
        "photon_factor": photon,
        "electronic_sd": electronic,
    }
    return inst, params


def _scatter_gain(rng: np.random.Generator, base: Instrument, detector: str) -> tuple[float, float]:
    """The factor on the base instrument's scatter gain that puts the lymphocytes' median at a
    random fraction of the range (`SCATTER_TARGET`), as a lab sets its voltages; and that
    fraction (before the lymphocytes' own position factor)."""
    lymph = SCATTER_BY_POPULATION["t_cell"]
    median = lymph.fsc if detector == "FSC" else lymph.ssc
    base_gain = base.scatter_gain.get(f"{detector}-A", 1.0)
    target = _log_uniform(rng, *SCATTER_TARGET[detector])
    return target * base.pnr / (median * base_gain), target


def _biology(rng: np.random.Generator) -> VariantBiology:
    """Scatter positions/shapes per cell group and stain separation/spread per marker."""
    position = {
        g: (
            _log_normal(rng, SCATTER_POSITION_SD["FSC"]),
            _log_normal(rng, SCATTER_POSITION_SD["SSC"]),
        )
        for g in SCATTER_GROUPS
    }
    shape = {
        g: (_log_uniform(rng, *SCATTER_SHAPE), _log_uniform(rng, *SCATTER_SHAPE))
        for g in SCATTER_GROUPS
    }
    separation = {m: _log_uniform(rng, *STAIN_SEPARATION) for m in MARKERS}
    jitter = {g: {m: _log_normal(rng, STAIN_GROUP_SD) for m in MARKERS} for g in SCATTER_GROUPS}
    spread = {m: _uniform(rng, *STAIN_SPREAD) for m in MARKERS}
    return VariantBiology(position, shape, separation, jitter, spread)


# --------------------------------------------------------------------------- a variant


@dataclass(frozen=True)
class Variant:
    """One randomized file's recipe: everything `simulate_variant` needs, drawn from `seed`."""

    seed: int
    cls: str
    n_events: int
    composition: Mapping[str, float]
    instrument: Instrument
    biology: VariantBiology
    params: dict = field(default_factory=dict)  # class-specific (pregate, aplasia) + instrument


def variant_class(seed: int) -> str:
    """The composition class of a seed: consecutive seeds cycle through every class."""
    return CLASSES[seed % len(CLASSES)]


def _in_aplasia(seed: int, cls: str, rng: np.random.Generator) -> bool:
    """Whether the donor is in B-cell aplasia: the lymphopenic class alternates with each cycle
    of consecutive seeds (so a small draw has both states); blood classes sometimes are."""
    if cls == "lymphopenic_post_cart":
        return (seed // len(CLASSES)) % 2 == 0
    return cls in _BLOOD_CLASSES and bool(rng.random() < APLASIA_CHANCE)


def draw_variant(seed: int, events: tuple[int, int] = EVENTS_RANGE) -> Variant:
    """Draw a variant from `seed` alone (same seed, same variant); `events` bounds the
    log-uniform event count (tests use the small end)."""
    rng = np.random.default_rng([seed, 7_919])
    cls = variant_class(seed)
    low, high = events
    n_events = int(round(_log_uniform(rng, low, high))) if high > low else int(low)
    composition, class_params = _COMPOSERS[cls](rng)
    if _in_aplasia(seed, cls, rng):
        b_events = int(rng.integers(APLASIA_B_EVENTS[0], APLASIA_B_EVENTS[1] + 1))
        composition = _deplete_b_cells(composition, n_events, b_events)
        class_params |= {"aplasia": True, "b_events_requested": b_events}
    else:
        class_params |= {"aplasia": False}
    base = INSTRUMENTS[str(rng.choice(sorted(INSTRUMENTS)))]
    instrument, inst_params = _instrument(rng, base)
    biology = _biology(rng)
    params = {**class_params, **inst_params}
    return Variant(seed, cls, n_events, composition, instrument, biology, params)


def simulate_variant(variant: Variant) -> SimulatedSample:
    """Simulate the variant's tube (deterministic for its seed). The class stays out of the
    FCS keywords, so nothing the pipeline reads tells it what was drawn."""
    return simulate_sample(
        variant.n_events,
        variant.composition,
        variant.instrument,
        np.random.default_rng([variant.seed, 104_729]),
        signals=variant.biology,
    )


def variant_record(variant: Variant, sample: SimulatedSample | None = None) -> dict:
    """Everything that was drawn, as JSON-ready data (plus true counts when simulated)."""
    bio = variant.biology
    record = {
        "seed": variant.seed,
        "class": variant.cls,
        "n_events": variant.n_events,
        "composition": {p: round(v, 6) for p, v in variant.composition.items()},
        **variant.params,
        "scatter_position": {g: list(v) for g, v in bio.position.items()},
        "scatter_shape": {g: list(v) for g, v in bio.shape.items()},
        "stain_separation": dict(bio.separation),
        "stain_jitter": {g: dict(v) for g, v in bio.stain_jitter.items()},
        "stain_spread": dict(bio.spread),
    }
    if sample is not None:
        counts = sample.labels.value_counts()
        record["true_counts"] = {str(p): int(c) for p, c in counts.items()}
    else:
        record["expected_counts"] = composition_counts(variant.n_events, variant.composition)
    return record


def variant_json_path(fcs_path: str | os.PathLike) -> Path:
    """`NAME.fcs` -> `NAME.variant.json` beside it."""
    p = Path(fcs_path)
    return p.with_name((p.name[:-4] if p.suffix.lower() == ".fcs" else p.name) + ".variant.json")


def write_variant(path: str | os.PathLike, variant: Variant) -> Path:
    """Write the variant's FCS file, its truth parquet and `NAME.variant.json` beside them."""
    sample = simulate_variant(variant)
    path = write_sample(path, sample)
    record = variant_record(variant, sample)
    try:
        variant_json_path(path).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise CytopipeError(f"cannot write the variant record: {exc}", path=path) from exc
    return path


def read_variant_record(fcs_path: str | os.PathLike) -> dict:
    """The class and parameters a variant file was drawn with."""
    path = variant_json_path(fcs_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CytopipeError(f"cannot read the variant record: {exc}", path=path) from exc
