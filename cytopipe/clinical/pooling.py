"""Pooling several centres' cohort exports under one set of definitions.

Why: paediatric CAR-T cohorts are small, so a centre's result only counts when it can be pooled
with others; pooling is only valid when every centre called aplasia and reconstitution by the
same rules. Each export carries its rules on every row (the def_* columns and the cytopipe
version, cytopipe.clinical.longitudinal.cohort_export), so the check is a comparison of those
columns, and a difference is refused with the field that differs, never averaged away.

A pooled analysis is one analysis of the combined patients: the Kaplan-Meier of time to
reconstitution uses each patient's days_to_reconstitution_or_censoring and reconstituted as
exported, per centre and pooled, with a log-rank test of the centres' curves. Patients are
keyed by (centre, patient_id): pseudonymous ids of different centres may coincide. Nothing is
added beyond what the exports hold.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cytopipe.clinical.kaplan_meier import kaplan_meier, km_median
from cytopipe.errors import CytopipeError
from cytopipe.results import EXPORT_COLUMNS

# Fields whose values must agree across centres: every rule, and the software that applied it.
AGREE = [c for c in EXPORT_COLUMNS if c.startswith("def_")] + ["cytopipe_version"]
NEEDED = ["patient_id", "reconstituted", "days_to_reconstitution_or_censoring", *AGREE]
POOLED_COLUMNS = ["centre", *[c for c in EXPORT_COLUMNS if c != "centre"]]


def check_definitions(exports: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """The shared definitions (field -> value); CytopipeError naming the first field whose
    value differs, with each export's value, or a missing column."""
    for name, frame in exports.items():
        missing = [c for c in NEEDED if c not in frame]
        if missing:
            raise CytopipeError(
                f"{name}: not a cytopipe cohort export (no column {', '.join(missing)})",
                hint="pool the tables/cohort_export.csv each centre's workflow wrote",
            )
        if not len(frame):
            raise CytopipeError(f"{name}: the export has no patients")
    shared = {}
    for field in AGREE:
        values = {name: sorted({_text(v) for v in frame[field]}) for name, frame in exports.items()}
        seen = sorted({v for vs in values.values() for v in vs})
        if len(seen) > 1:
            listing = "; ".join(f"{name}: {' | '.join(vs)!r}" for name, vs in values.items())
            raise CytopipeError(
                f"the centres' definitions differ in {field}: {listing}",
                hint="pool only exports made with the same definitions (re-run the "
                "longitudinal step of each centre with one config) and the same cytopipe",
            )
        shared[field] = seen[0] if seen else ""
    return shared


def pool_exports(exports: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The centres' rows in one table (checked first); a centre without a `centre` code is
    named by its export's name. Refuses a centre code used by two exports and a patient listed
    twice within one centre."""
    check_definitions(exports)
    codes = centre_codes(exports)
    frames = [frame.assign(centre=codes[name]) for name, frame in exports.items()]
    owners: dict[str, str] = {}
    for name, frame in zip(exports, frames, strict=True):
        for code in frame["centre"].unique():
            if owners.setdefault(code, name) != name:
                raise CytopipeError(
                    f"centre code {code!r} is in both {owners[code]} and {name}",
                    hint="give each centre its own longitudinal.centre code",
                )
    pooled = pd.concat(frames, ignore_index=True)
    dup = pooled.duplicated(["centre", "patient_id"])
    if dup.any():
        row = pooled[dup].iloc[0]
        raise CytopipeError(
            f"patient {row['patient_id']} is listed twice for centre {row['centre']}"
        )
    pooled["reconstituted"] = pooled["reconstituted"].map(_truth)
    for column in POOLED_COLUMNS:
        if column not in pooled:
            pooled[column] = ""
    return pooled[POOLED_COLUMNS]


def centre_codes(exports: Mapping[str, pd.DataFrame]) -> dict[str, pd.Series]:
    """Each export's rows' centre: its `centre` code, or the export's name where it has none."""
    out = {}
    for name, frame in exports.items():
        code = frame["centre"].map(_text) if "centre" in frame else pd.Series("", index=frame.index)
        out[name] = code.where(code != "", name)
    return out


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _truth(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def km_input(pooled: pd.DataFrame) -> pd.DataFrame:
    """Patients in the Kaplan-Meier (a time to reconstitution or censoring): centre, time,
    observed."""
    time = pd.to_numeric(pooled["days_to_reconstitution_or_censoring"], errors="coerce")
    keep = time.notna().to_numpy()
    return pd.DataFrame(
        {
            "centre": pooled["centre"].to_numpy()[keep],
            "time": time.to_numpy()[keep],
            "observed": pooled["reconstituted"].to_numpy(dtype=bool)[keep],
        }
    )


def log_rank(times: np.ndarray, observed: np.ndarray, groups: np.ndarray) -> dict:
    """The log-rank test of equal time-to-reconstitution curves across groups (k - 1 degrees
    of freedom): chi-square, df and p. With one group: no test (NaN)."""
    from scipy.stats import chi2

    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    names = sorted(set(groups))
    k = len(names)
    if k < 2 or not observed.any():
        return {"chi2": float("nan"), "df": max(k - 1, 0), "p": float("nan")}
    g = np.searchsorted(names, groups)
    o_minus_e = np.zeros(k)
    cov = np.zeros((k, k))
    for t in np.unique(times[observed]):
        at_risk = np.array([np.sum((times >= t) & (g == j)) for j in range(k)], dtype=float)
        deaths = np.array([np.sum((times == t) & observed & (g == j)) for j in range(k)], float)
        n, d = at_risk.sum(), deaths.sum()
        if n < 1:
            continue
        o_minus_e += deaths - d * at_risk / n
        if n > 1:
            share = at_risk / n
            cov += d * (n - d) / (n - 1) * (np.diag(share) - np.outer(share, share))
    stat = float(o_minus_e[:-1] @ np.linalg.pinv(cov[:-1, :-1]) @ o_minus_e[:-1])
    return {"chi2": stat, "df": k - 1, "p": float(chi2.sf(stat, k - 1))}


def km_by_centre(pooled: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Kaplan-Meier per centre and pooled ("all centres")."""
    data = km_input(pooled)
    out = {}
    for centre in [*sorted(data["centre"].unique()), None]:
        part = data if centre is None else data[data["centre"] == centre]
        out["all centres" if centre is None else str(centre)] = kaplan_meier(
            part["time"].to_numpy(), part["observed"].to_numpy()
        )
    return out


def medians(curves: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per curve: patients, reconstitutions, median days to reconstitution and its 95%
    interval (where the log-log band crosses 0.5; empty when not reached)."""
    rows = []
    for name, km in curves.items():
        rows.append(
            {
                "centre": name,
                "patients": int(km["at_risk"].iloc[0]) if len(km) else 0,
                "reconstituted": int(km["events"].sum()),
                "median_days": km_median(km),
                "median_low": km_median(km, "still_aplastic_low"),
                "median_high": km_median(km, "still_aplastic_high"),
            }
        )
    return pd.DataFrame(rows)
