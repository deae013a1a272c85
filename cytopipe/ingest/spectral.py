"""Spectral cytometers (Cytek Aurora and Northern Lights, Sony ID7000 and SP6800, BD
FACSymphony A5 SE and FACSDiscover): their software unmixes each event's full spectrum into
the stains, which replaces compensation. Their files carry no spillover matrix (or an identity
one), and that is not a missing matrix: known so that every such file is not warned about as
gated uncompensated."""

from __future__ import annotations

from collections.abc import Mapping

from cytopipe.ingest.keywords import cytometer_named

# $CYT of the instruments, matched case-insensitively as a substring
INSTRUMENTS = ("aurora", "northern lights", "id7000", "sp6800", "symphony a5 se", "facsdiscover")


def detected(keywords: Mapping[str, str]) -> str | None:
    """Why the file is a spectral acquisition (its $CYT), or None."""
    return cytometer_named(keywords, INSTRUMENTS)


def note(why: str) -> str:
    return (
        f"spectral cytometer ({why}): the stains are gated as its software unmixed them; "
        "unmixing replaces compensation, so no spillover matrix is needed (a matrix in the file "
        "or given for it is applied on top, as a residual correction)"
    )
