"""The biology and the instruments behind the synthetic samples, as plain data tables.

Kept apart from the sampling code so a reviewer can check the numbers against what a cytometrist
expects without reading NumPy, and so a new instrument or population is one table entry.

All intensities are "instrument A" linear units (a BD LSRFortessa with 18-bit range, 262144):
what the cytometer records before compensation. Other instruments rescale them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

# --- populations -------------------------------------------------------------------------------

B_SUBSETS: tuple[str, ...] = (
    "b_transitional",
    "b_naive",
    "b_unswitched_memory",
    "b_switched_memory",
    "b_double_negative",
    "plasmablast",
)
# car_t: CAR+ T cells after CD19 CAR-T infusion (last, so every other population keeps its code)
LYMPHOCYTES: tuple[str, ...] = ("t_cell", "nk", *B_SUBSETS, "car_t")
LEUKOCYTES: tuple[str, ...] = ("granulocyte", "monocyte", *LYMPHOCYTES)
# Populations with a phenotype of their own; `dead` and `doublet` are built from these.
SINGLET_CELLS: tuple[str, ...] = ("cd45_negative", *LEUKOCYTES)

# Truth label vocabulary, in the category order of the truth parquet files.
POPULATIONS: tuple[str, ...] = (
    "debris",
    "doublet",
    "dead",
    "cd45_negative",
    "granulocyte",
    "monocyte",
    "nk",
    "t_cell",
    *B_SUBSETS,
    "car_t",
)

# Fluorescence markers of the panel, in the canonical (instrument A) order.
MARKERS: tuple[str, ...] = (
    "CD45",
    "CD3",
    "CD19",
    "CD20",
    "CD27",
    "CD38",
    "IgD",
    "CD24",
    "viability",
)
# The CAR detection reagent (anti-idiotype / CD19-CAR detection / tag) of the CAR-T monitoring
# panel: only the cohort's instruments (CAR_INSTRUMENTS) have its channel. Its signal is drawn
# from a child random stream, so files without it are exactly what they were before it existed.
CAR = "CAR"
ALL_MARKERS: tuple[str, ...] = (*MARKERS, CAR)
SCATTER: tuple[str, ...] = ("FSC-A", "FSC-H", "SSC-A")
# Column of each marker in (events, ALL_MARKERS) arrays, and the code of each truth label.
MARKER_COLUMN: Mapping[str, int] = MappingProxyType({m: i for i, m in enumerate(ALL_MARKERS)})
POPULATION_CODE: Mapping[str, int] = MappingProxyType({p: i for i, p in enumerate(POPULATIONS)})

# B-cell subsets (fractions of B cells) of an adult autoimmune patient before CAR-T.
BASELINE_B_SUBSETS: Mapping[str, float] = MappingProxyType(
    {
        "b_transitional": 0.05,
        "b_naive": 0.63,
        "b_unswitched_memory": 0.10,
        "b_switched_memory": 0.14,
        "b_double_negative": 0.055,
        "plasmablast": 0.025,
    }
)


@dataclass(frozen=True)
class Scatter:
    """Log-normal forward/side scatter area of one population (medians in instrument A units)."""

    fsc: float
    fsc_sigma: float
    ssc: float
    ssc_sigma: float


@dataclass(frozen=True)
class Stain:
    """Specific staining of one marker: log-normal (median, sigma) on a fraction of the cells.

    `positive_fraction` < 1 makes a bimodal marker (e.g. CD27 on T cells); the rest is negative.
    """

    median: float
    sigma: float = 0.35
    positive_fraction: float = 1.0


_LYMPH = Scatter(52_000, 0.10, 15_000, 0.20)
SCATTER_BY_POPULATION: Mapping[str, Scatter] = MappingProxyType(
    {
        "cd45_negative": Scatter(25_000, 0.30, 4_000, 0.50),  # RBC ghosts, platelet clumps
        "granulocyte": Scatter(92_000, 0.10, 130_000, 0.15),
        "monocyte": Scatter(80_000, 0.10, 45_000, 0.22),
        "nk": Scatter(54_000, 0.10, 18_000, 0.20),
        "t_cell": _LYMPH,
        "b_transitional": _LYMPH,
        "b_naive": _LYMPH,
        "b_unswitched_memory": Scatter(54_000, 0.10, 15_000, 0.20),
        "b_switched_memory": Scatter(54_000, 0.10, 15_000, 0.20),
        "b_double_negative": _LYMPH,
        "plasmablast": Scatter(62_000, 0.10, 19_000, 0.20),
        "car_t": Scatter(60_000, 0.12, 17_000, 0.22),  # activated, a little larger
    }
)

_B_COMMON = {"CD45": Stain(35_000, 0.30), "CD19": Stain(8_000), "CD20": Stain(25_000)}
# Specific staining per population; a marker not listed is negative (autofluorescence only).
PHENOTYPES: Mapping[str, Mapping[str, Stain]] = MappingProxyType(
    {
        "cd45_negative": {},
        "granulocyte": {"CD45": Stain(6_000), "CD24": Stain(25_000, 0.40), "CD38": Stain(400, 0.7)},
        "monocyte": {"CD45": Stain(30_000, 0.30), "CD38": Stain(2_500, 0.6, 0.6)},
        "nk": {
            "CD45": Stain(35_000, 0.30),
            "CD38": Stain(8_000, 0.5),
            "CD27": Stain(500, 0.8, 0.4),
        },
        "t_cell": {
            "CD45": Stain(40_000, 0.30),
            "CD3": Stain(20_000),
            "CD27": Stain(4_000, 0.5, 0.75),
            "CD38": Stain(900, 0.8, 0.5),
        },
        "b_transitional": {
            **_B_COMMON,
            "CD20": Stain(30_000),
            "IgD": Stain(20_000, 0.40),
            "CD24": Stain(25_000),
            "CD38": Stain(20_000),
        },
        "b_naive": {
            **_B_COMMON,
            "IgD": Stain(15_000, 0.40),
            "CD24": Stain(4_000),
            "CD38": Stain(3_000),
        },
        "b_unswitched_memory": {
            **_B_COMMON,
            "IgD": Stain(6_000, 0.45),
            "CD27": Stain(6_000, 0.40),
            "CD24": Stain(15_000, 0.40),
            "CD38": Stain(500, 0.6),
        },
        "b_switched_memory": {
            **_B_COMMON,
            "CD27": Stain(6_000, 0.40),
            "CD24": Stain(15_000, 0.40),
            "CD38": Stain(500, 0.6),
        },
        "b_double_negative": {
            **_B_COMMON,
            "CD20": Stain(20_000),
            "CD24": Stain(2_500, 0.5),
            "CD38": Stain(400, 0.6),
        },
        "plasmablast": {
            "CD45": Stain(25_000, 0.30),  # a little dimmer than other lymphocytes
            "CD19": Stain(3_000, 0.35),  # CD19 dim (B cells ~8000)
            "CD27": Stain(60_000, 0.30),
            "CD38": Stain(90_000, 0.25),
        },
        "car_t": {  # activated T cells carrying the CAR (detection reagent moderately bright)
            "CD45": Stain(40_000, 0.30),
            "CD3": Stain(18_000),
            "CD27": Stain(4_000, 0.5, 0.6),
            "CD38": Stain(5_000, 0.6),
            CAR: Stain(12_000, 0.45),
        },
    }
)

# Autofluorescence of a small lymphocyte per detector, and how much brighter other cells are.
AUTOFLUORESCENCE: Mapping[str, float] = MappingProxyType(
    {
        "CD45": 120.0,
        "CD3": 150.0,
        "CD19": 40.0,
        "CD20": 30.0,
        "CD27": 60.0,
        "CD38": 60.0,
        "IgD": 100.0,
        "CD24": 70.0,
        "viability": 30.0,
        CAR: 80.0,
    }
)
AUTOFLUORESCENCE_SCALE: Mapping[str, float] = MappingProxyType(
    {"cd45_negative": 0.5, "granulocyte": 3.0, "monocyte": 2.0, "nk": 1.1, "plasmablast": 1.6}
)

# Events that are not intact single live cells.
DEBRIS_SCATTER = Scatter(8_000, 0.45, 6_000, 1.0)  # FSC is capped below 20k
DEBRIS_FSC_MAX = 19_500.0
DEAD_FSC_FACTOR = (0.45, 0.70)  # uniform range; dead cells shrink
DEAD_STAIN_FACTOR = 0.5  # surface markers fade
DEAD_VIABILITY = Stain(30_000, 0.50)
DOUBLET_FSC_H_FACTOR = (1.05, 1.25)  # FSC-H of a doublet vs a singlet: barely higher
SINGLET_FSC_H_RATIO = 0.80
SINGLET_FSC_H_SIGMA = 0.04


# --- instruments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    canonical: str  # FSC-A, FSC-H, SSC-A, Time or a marker of MARKERS
    pnn: str
    pns: str = ""
    voltage: int | None = None


@dataclass(frozen=True)
class Instrument:
    """How one cytometer records the same biology: names, order, range, gains and spillover.

    `fluor_gain`/`fluor_offset` act on the pre-spill signal of each fluorochrome (a brighter or
    dimmer conjugate, a detector baseline), so the file's $SPILLOVER still exactly undoes the
    spill and compensation returns `gain * signal + offset`. `spill` maps (source marker,
    detector marker) to the fraction of the source's signal seen in that detector.
    """

    key: str
    cytometer: str
    pnr: float
    channels: tuple[Channel, ...]
    spill: Mapping[tuple[str, str], float]
    fluor_gain: Mapping[str, float] = field(default_factory=dict)
    fluor_offset: Mapping[str, float] = field(default_factory=dict)
    scatter_gain: Mapping[str, float] = field(default_factory=dict)
    timestep: float = 0.01
    time_pnr: float = 16_777_216.0
    electronic_sd: float = 25.0  # Gaussian detector noise (instrument units)
    photon_factor: float = 15.0  # variance per unit of signal (Poisson-like spread)
    event_rate: tuple[float, float] = (1_500.0, 3_000.0)  # events/s, uniform range per file

    @property
    def fluorescence(self) -> tuple[Channel, ...]:
        return tuple(c for c in self.channels if c.canonical in ALL_MARKERS)

    def channel(self, canonical: str) -> Channel:
        for c in self.channels:
            if c.canonical == canonical:
                return c
        raise KeyError(canonical)


_SPILL_A = {
    ("CD3", "CD45"): 0.15,  # BV421 -> V500
    ("CD3", "CD27"): 0.010,  # BV421 -> BV605
    ("CD3", "IgD"): 0.020,  # BV421 -> FITC
    ("CD45", "CD3"): 0.005,  # V500 -> BV421
    ("CD45", "CD27"): 0.060,  # V500 -> BV605
    ("CD45", "IgD"): 0.030,  # V500 -> FITC
    ("CD27", "CD45"): 0.005,  # BV605 -> V500
    ("CD27", "CD24"): 0.030,  # BV605 -> PE
    ("CD27", "CD38"): 0.020,  # BV605 -> PerCP-Cy5.5
    ("IgD", "CD24"): 0.180,  # FITC -> PE
    ("IgD", "CD38"): 0.020,  # FITC -> PerCP-Cy5.5
    ("IgD", "CD45"): 0.002,  # FITC -> V500
    ("CD24", "IgD"): 0.010,  # PE -> FITC
    ("CD24", "CD38"): 0.150,  # PE -> PerCP-Cy5.5
    ("CD24", "CD19"): 0.120,  # PE -> PE-Cy7
    ("CD24", "CD27"): 0.040,  # PE -> BV605 (cross-laser)
    ("CD38", "CD19"): 0.250,  # PerCP-Cy5.5 -> PE-Cy7
    ("CD38", "viability"): 0.050,  # PerCP-Cy5.5 -> APC
    ("CD38", "CD20"): 0.030,  # PerCP-Cy5.5 -> APC-H7
    ("CD19", "CD24"): 0.020,  # PE-Cy7 -> PE
    ("CD19", "CD38"): 0.010,  # PE-Cy7 -> PerCP-Cy5.5
    ("CD19", "CD20"): 0.030,  # PE-Cy7 -> APC-H7
    ("viability", "CD20"): 0.100,  # APC -> APC-H7
    ("viability", "CD38"): 0.020,  # APC -> PerCP-Cy5.5
    ("CD20", "viability"): 0.020,  # APC-H7 -> APC
    ("CD20", "CD19"): 0.050,  # APC-H7 -> PE-Cy7
}

INSTRUMENT_A = Instrument(
    key="A",
    cytometer="LSRFortessa",
    pnr=262_144.0,
    channels=(
        Channel("FSC-A", "FSC-A", "", 420),
        Channel("FSC-H", "FSC-H", "", 420),
        Channel("SSC-A", "SSC-A", "", 260),
        Channel("CD45", "V500-A", "CD45 V500", 410),
        Channel("CD3", "BV421-A", "CD3 BV421", 380),
        Channel("CD19", "PE-Cy7-A", "CD19 PE-Cy7", 560),
        Channel("CD20", "APC-H7-A", "CD20 APC-H7", 540),
        Channel("CD27", "BV605-A", "CD27 BV605", 450),
        Channel("CD38", "PerCP-Cy5-5-A", "CD38 PerCP-Cy5.5", 520),
        Channel("IgD", "FITC-A", "IgD FITC", 480),
        Channel("CD24", "PE-A", "CD24 PE", 430),
        Channel("viability", "APC-A", "LIVE/DEAD Far Red", 500),
        Channel("Time", "Time"),
    ),
    spill=MappingProxyType(_SPILL_A),
)

_SPILL_B = {
    ("IgD", "CD24"): 0.200,  # FITC (FL1) -> PE (FL2)
    ("IgD", "CD27"): 0.030,  # FITC -> ECD
    ("CD24", "IgD"): 0.010,  # PE -> FITC
    ("CD24", "CD27"): 0.220,  # PE -> ECD
    ("CD24", "CD38"): 0.060,  # PE -> PC5.5
    ("CD24", "CD19"): 0.020,  # PE -> PC7
    ("CD27", "CD24"): 0.040,  # ECD -> PE
    ("CD27", "CD38"): 0.150,  # ECD -> PC5.5
    ("CD27", "CD19"): 0.030,  # ECD -> PC7
    ("CD38", "CD19"): 0.120,  # PC5.5 -> PC7
    ("CD38", "viability"): 0.080,  # PC5.5 -> FL6
    ("CD19", "CD38"): 0.020,  # PC7 -> PC5.5
    ("CD19", "CD20"): 0.040,  # PC7 -> APC-A750
    ("viability", "CD38"): 0.100,  # 7-AAD -> PC5.5
    ("viability", "CD19"): 0.030,  # 7-AAD -> PC7
    ("CD20", "viability"): 0.030,  # APC-A750 -> FL6
    ("CD20", "CD19"): 0.060,  # APC-A750 -> PC7
    ("CD3", "CD45"): 0.200,  # PB -> KrO
    ("CD45", "CD3"): 0.010,  # KrO -> PB
    ("CD45", "IgD"): 0.010,  # KrO -> FITC
}

INSTRUMENT_B = Instrument(
    key="B",
    cytometer="Navios EX",
    pnr=1_048_576.0,
    channels=(
        Channel("Time", "TIME"),
        Channel("FSC-A", "FS INT"),
        Channel("FSC-H", "FS PEAK"),
        Channel("SSC-A", "SS INT"),
        Channel("IgD", "FL1 INT", "IgD FITC"),
        Channel("CD24", "FL2 INT", "CD24 PE"),
        Channel("CD27", "FL3 INT", "CD27 ECD"),
        Channel("CD38", "FL4 INT", "CD38 PC5.5"),
        Channel("CD19", "FL5 INT", "CD19 PC7"),
        Channel("viability", "FL6 INT", "7-AAD"),
        Channel("CD20", "FL7 INT", "CD20 APC-A750"),
        Channel("CD3", "FL9 INT", "CD3 PB"),
        Channel("CD45", "FL10 INT", "CD45 KrO"),
    ),
    spill=MappingProxyType(_SPILL_B),
    fluor_gain=MappingProxyType(
        {
            "IgD": 0.85,
            "CD24": 1.20,
            "CD27": 0.75,
            "CD38": 1.10,
            "CD19": 1.25,
            "viability": 0.70,
            "CD20": 0.90,
            "CD3": 1.15,
            "CD45": 0.80,
        }
    ),
    fluor_offset=MappingProxyType(
        {
            "IgD": 30.0,
            "CD24": 15.0,
            "CD27": 40.0,
            "CD38": 20.0,
            "CD19": 10.0,
            "viability": 25.0,
            "CD20": 35.0,
            "CD3": 50.0,
            "CD45": 45.0,
        }
    ),
    # Range ratio (1048576 / 262144 = 4) times the optics' own factor.
    scatter_gain=MappingProxyType({"FSC-A": 4 * 0.85, "FSC-H": 4 * 0.85, "SSC-A": 4 * 1.20}),
    timestep=0.1,
    electronic_sd=40.0,
    photon_factor=20.0,
    event_rate=(1_000.0, 2_500.0),
)

INSTRUMENTS: Mapping[str, Instrument] = MappingProxyType({"A": INSTRUMENT_A, "B": INSTRUMENT_B})


def with_car(inst: Instrument, channel: Channel, spill: Mapping, gain: float = 1.0,
             offset: float = 0.0) -> Instrument:  # fmt: skip
    """The instrument with a CAR detection channel added (the CAR-T monitoring panel)."""
    return replace(
        inst,
        channels=(*inst.channels, channel),
        spill=MappingProxyType({**inst.spill, **spill}),
        fluor_gain=MappingProxyType({**inst.fluor_gain, CAR: gain}),
        fluor_offset=MappingProxyType({**inst.fluor_offset, CAR: offset}),
    )


# The synthetic cohorts' panel: the B-cell panel plus a CAR detection reagent.
CAR_INSTRUMENTS: Mapping[str, Instrument] = MappingProxyType(
    {
        "A": with_car(
            INSTRUMENT_A,
            Channel(CAR, "BV786-A", "CD19 CAR-detect BV786", 470),
            {(CAR, "CD20"): 0.040, ("CD20", CAR): 0.020, ("CD3", CAR): 0.005},  # BV786 <-> APC-H7
        ),
        "B": with_car(
            INSTRUMENT_B,
            Channel(CAR, "FL8 INT", "CD19 CAR-detect APC-A700"),
            {(CAR, "CD20"): 0.120, ("viability", CAR): 0.060, ("CD20", CAR): 0.030},
            gain=0.9,
            offset=30.0,
        ),
    }
)

# --- patients ----------------------------------------------------------------------------------

TIMEPOINTS: tuple[int, ...] = (-7, 7, 14, 28, 56, 90, 120, 180, 270, 365)
ADULT_DISEASES: tuple[str, ...] = ("SLE", "SSc", "IIM", "AAV", "NMOSD", "MG")
CHILD_DISEASES: tuple[str, ...] = ("SLE", "JDM", "SSc")
# Obviously fake names: $SRC carries them so that keyword privacy filtering can be tested.
FAKE_NAMES: tuple[str, ...] = (
    "J. Doe",
    "M. Mustermann",
    "A. Rossi",
    "L. Martin",
    "K. Tanaka",
    "S. Svensson",
    "E. Novak",
    "R. Silva",
    "H. Jansen",
    "O. Nowak",
    "P. Dubois",
    "T. Virtanen",
)
