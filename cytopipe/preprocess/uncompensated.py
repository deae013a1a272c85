"""What a file's stored compensation leaves unsaid: stains gated uncompensated because a
digital instrument's file has no spillover matrix, or one that is the identity. Notes only
(the sample page, `uncompensated` in the provenance, the cohort page's file checks): the data
are gated as they are, and the lab gives the matrix (compensation.batches in the config).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cytopipe.preprocess.compensation import Spillover

DIGITAL_RANGE = 1024  # a stain channel with a wider range comes from a digital instrument


def missing_spillover_note(sample, stains: Sequence[int]) -> str | None:
    """A warning when a digital instrument's file (a stain channel of more than 1024 levels)
    with two or more stains carries no spillover matrix and none was given: its stains are
    gated as stored, uncompensated unless the exporter compensated them. The Lyoplate file so
    stored (its $SPILLOVER dropped) kept its lymphocytes, T and B cells (0.975-0.983) and lost
    every subset (naive 0.00, transitional 0.29), each cut flagged only as a fallback. Analog
    instruments (FACSCalibur's 1024 channels) compensated in hardware: no warning."""
    if len(stains) < 2 or max(float(sample.pnr[i]) for i in stains) <= DIGITAL_RANGE:
        return None
    return (
        "no spillover matrix in the file ($SPILLOVER, SPILL, $COMP) and none given: the stains "
        "are gated uncompensated (as stored: unless the exporter compensated them); give the "
        "matrix (compensation.batches in the config) or check how the file was exported"
    )


def identity_spillover_note(sample, spill: Spillover, stains: Sequence[int]) -> str | None:
    """A warning when the file's own matrix is the identity among two or more of its stains on
    a digital instrument: FACSDiva writes one when no compensation was set up at acquisition
    (FlowKit's test_comp_example.fcs: a 14x14 identity beside the lab's real matrix, a CSV
    file), so 'compensated with the file's matrix' leaves the stains as stored. Spectral
    instruments write one over data they unmixed already: the note says to check, not that
    the data are wrong."""
    names = [sample.pnn[i] for i in stains if float(sample.pnr[i]) > DIGITAL_RANGE]
    rows = [spill.channels.index(n) for n in names if n in spill.channels]
    if len(rows) < 2:
        return None
    sub = spill.matrix[np.ix_(rows, rows)]
    if np.any(np.abs(sub - np.diag(np.diag(sub))) > 0):
        return None
    return (
        f"the file's spillover matrix ({spill.source}) is the identity for its stains: no "
        "compensation was set up at acquisition, so the stains are gated uncompensated (unless "
        "the instrument unmixed them, as spectral cytometers do); give the lab's matrix "
        "(compensation.batches in the config) or check how the file was acquired"
    )
