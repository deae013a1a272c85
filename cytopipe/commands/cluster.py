"""The `cluster-train` and `cluster-map` commands: one cohort model, each sample mapped onto it."""

from __future__ import annotations

import argparse
import sys

from cytopipe.atomic import write_json
from cytopipe.cluster.mapping import map_files
from cytopipe.cluster.model import load_model, metacluster_table, reannotate, save_model
from cytopipe.cluster.settings import load_settings, parse_settings
from cytopipe.cluster.training import train_files


def _run_train(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    model = train_files(args.events, args.gates, settings, args.sample_ids, args.info)
    save_model(args.out, model)
    info = model.info
    for sid, why in (info.get("skipped_samples") or {}).items():
        print(f"cytopipe: cluster-train: skipped {sid}: {why}", file=sys.stderr)
    if not model.trained:
        print(f"cytopipe: cluster-train: no model: {info['reason']}", file=sys.stderr)
        print(f"{args.out}: not trained")
        return 0
    counts: dict[str, int] = {}
    for lab in model.labels:
        counts[lab] = counts.get(lab, 0) + 1
    print(
        f"{args.out}: {model.xdim}x{model.ydim} SOM, {model.k} metaclusters "
        f"({', '.join(f'{n}x {lab}' if n > 1 else lab for lab, n in counts.items())}) on "
        f"{info['training_events']} events from {len(info['samples'])} samples, "
        f"markers {', '.join(model.markers)}"
    )
    print(metacluster_table(model).to_string(index=False))  # medians, for editing the rules
    return 0


def _run_map(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    if args.config:
        settings = load_settings(args.config)
        model = reannotate(model, settings)
    else:  # the settings the model was trained with
        settings = parse_settings(model.info.get("settings") or {}, f"{args.model} (settings)")
    result = map_files(
        args.events, args.gates, model, settings, args.sample_id, args.info, args.stats
    )
    write_json(args.out, result)
    if result["status"] != "ok":
        print(f"cytopipe: cluster-map: {result['sample_id']}: {result['reason']}", file=sys.stderr)
    for flag in result.get("disagreements") or []:
        print(
            f"cytopipe: cluster-map: {result['sample_id']}: disagreement: {flag}", file=sys.stderr
        )
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser(
        "cluster-train",
        help="train the cohort's SOM + consensus metaclusters on pooled gated lymphocytes",
        description=(
            "Pools up to training.events_per_sample gated events per sample, trains a batch SOM "
            "and consensus metaclusters, annotates them with the rules in --config and writes "
            "the model (NPZ). Failed samples (empty files) are skipped and listed."
        ),
    )
    t.add_argument("--events", nargs="+", required=True, help="preprocessed/{sample}.parquet")
    t.add_argument("--gates", nargs="+", required=True, help="samples/{sample}/gates.parquet")
    t.add_argument("--sample-ids", nargs="+", default=None, help="default: the events file names")
    t.add_argument(
        "--info",
        nargs="+",
        default=None,
        help="preprocessed/{sample}.json (scales to undo); default: beside each events file",
    )
    t.add_argument("--config", default="config/clustering.yaml", help="clustering settings")
    t.add_argument("--out", required=True, help="model file (.npz)")
    t.set_defaults(func=_run_train)

    m = subparsers.add_parser(
        "cluster-map",
        help="map one sample onto the cohort model: clusters, annotation, agreement with gates",
    )
    m.add_argument("events", help="preprocessed/{sample}.parquet")
    m.add_argument("--gates", required=True, help="samples/{sample}/gates.parquet")
    m.add_argument("--model", required=True, help="model from cluster-train")
    m.add_argument("--out", required=True, help="clusters.json")
    m.add_argument(
        "--config",
        default=None,
        help="clustering settings: annotate and judge agreement with these rules instead of "
        "the model's own",
    )
    m.add_argument("--sample-id", default=None, help="default: the events file name")
    m.add_argument("--info", default=None, help="preprocessed/{sample}.json; default: beside it")
    m.add_argument(
        "--stats",
        default=None,
        help="samples/{sample}/stats.tsv: gates cut on a continuum (one population found) are "
        "compared with the clusters but not judged",
    )
    m.set_defaults(func=_run_map)
