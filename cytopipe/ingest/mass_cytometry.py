"""Mass cytometry files (CyTOF, Helios, CyTOF XT): stains read as metal isotopes, no scatter,
no optical spillover. Known so that a file without a spillover matrix is not warned about as a
flow file would be (isotope spill is a few percent, and rarely corrected), and so the sample
page says why its scatter gates passed."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from cytopipe.ingest.keywords import cytometer_named

# $CYT of the instruments (Fluidigm, now Standard BioTools; DVS Sciences before them)
INSTRUMENTS = ("cytof", "helios", "dvs", "fluidigm", "standard biotools")
# a channel named for its metal isotope: "Nd142Di", "(Nd142)Dd", "CD19(Sm147)Di" (CyTOF 1/2)
_ISOTOPE = re.compile(r"\(?[A-Z][a-z]?\d{2,3}\)?D[di]$")
MIN_ISOTOPE_CHANNELS = 3


def detected(keywords: Mapping[str, str], pnn: Sequence[str]) -> str | None:
    """Why the file is a mass cytometry acquisition (its $CYT, or its isotope channels), or
    None for a flow file."""
    by_name = cytometer_named(keywords, INSTRUMENTS)
    if by_name:
        return by_name
    isotopes = [n for n in pnn if _ISOTOPE.search(str(n).strip())]
    if len(isotopes) >= MIN_ISOTOPE_CHANNELS:
        return f"isotope channels {', '.join(isotopes[:3])}{', ...' if len(isotopes) > 3 else ''}"
    return None


def note(why: str) -> str:
    return (
        f"mass cytometry ({why}): the stains are read on arcsinh (cofactor 5, 65,536 counts = 1) "
        "whatever $PnR declares; no optical spillover, so gated uncompensated (isotope impurity "
        "and oxide spill are not corrected unless a matrix is given: compensation.batches)"
    )
