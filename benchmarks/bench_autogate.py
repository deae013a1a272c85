"""Data-driven placement must not make gating slow: `cytopipe autogate`'s work on a 1 M-event
file (read, preprocess, place and apply every gate) with today's placement (number of mixture
components by BIC over 1..k, lymphocytes by backgating with refinement, the CD19 cut anchored
on the sample's T cells with its shoulder/support fallback, the FSC x SSC view for an impure
cluster, plasmablasts joined by phenotype) and with the old placement (the template's fixed k,
lowest-SSC cluster, CD19 anchored on a fixed window), side by side in one
process on the same file; the placement alone is shown too.

    .venv/bin/python benchmarks/bench_autogate.py [--events 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import yaml

from cytopipe.config import load_config
from cytopipe.gating import autogate as placement
from cytopipe.gating import mixture
from cytopipe.gating.template import load_template
from cytopipe.ingest.panel import load_panel
from cytopipe.preprocess.sample import preprocess
from cytopipe.synth.composition import blood_composition
from cytopipe.synth.sample_files import write_sample
from cytopipe.synth.simulate import simulate_sample

REPO = Path(__file__).resolve().parent.parent


def fixed_k_mixture(z: np.ndarray, k_max: int, seed=None):
    """The old placement: always k_max components (no start from the lineage+ events)."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k_max, covariance_type="full", random_state=0, n_init=2).fit(z)


def old_template(path: Path, out: Path) -> Path:
    """The template without today's data-driven options (what the old placement did)."""
    raw = yaml.safe_load(path.read_text())
    for pop in raw["populations"]:
        pop.pop("rescue", None)
        for variant in (pop, *pop.get("alternatives", ())):
            for key in ("backgate", "join_share", "refine_share", "seeded", "compare_views"):
                (variant.get("place") or {}).pop(key, None)
    for key in ("population", "fallback"):
        raw["thresholds"]["cd19"]["anchor"].pop(key, None)
    raw["thresholds"]["fsc_debris"].pop("backgate", None)  # the debris cut among cells
    out.write_text(yaml.safe_dump(raw))
    return out


def best_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    panel = load_panel(REPO / "config" / "panel.yaml")
    cfg = load_config(REPO / "config" / "config.yaml")
    specs = load_template(REPO / "config" / "gating.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_sample(
            Path(tmp) / "bench.fcs", simulate_sample(args.events, blood_composition(), "A", 11)
        )

        old_specs = load_template(
            old_template(REPO / "config" / "gating.yaml", Path(tmp) / "o.yaml")
        )

        def end_to_end(template) -> None:
            pre = preprocess(str(path), panel, cfg)
            keep = pre.qc_pass
            placement.autogate(
                template, {m: np.ascontiguousarray(v[keep]) for m, v in pre.columns.items()}
            )

        pre = preprocess(str(path), panel, cfg)
        columns = {m: np.ascontiguousarray(v[pre.qc_pass]) for m, v in pre.columns.items()}
        new = best_time(lambda: end_to_end(specs), args.repeats)
        new_place = best_time(lambda: placement.autogate(specs, columns), args.repeats)
        with mock.patch.object(mixture, "_fit_mixture", fixed_k_mixture):
            old = best_time(lambda: end_to_end(old_specs), args.repeats)
            old_place = best_time(lambda: placement.autogate(old_specs, columns), args.repeats)
    print(f"{args.events} events: end to end {new:.2f} s (today) vs {old:.2f} s (old); "
          f"placement alone {new_place:.2f} s vs {old_place:.2f} s")  # fmt: skip
    print(
        f"autogate_time_ratio_new_over_old={new / old:.2f} (target <= 1.5) "
        f"placement_only={new_place / old_place:.2f}"
    )


if __name__ == "__main__":
    main()
