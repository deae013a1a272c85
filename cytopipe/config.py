"""The workflow configuration (config/config.yaml) with its defaults.

Snakemake validates the file against workflow/schemas/config.schema.yaml; the CLI reads the
same file so a command run by hand behaves exactly as inside the workflow.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import yaml

from cytopipe.errors import ConfigError

DEFAULTS: dict = {
    "samples": "config/samples.tsv",
    "panel": "config/panel.yaml",
    "gating": "config/gating.yaml",
    "clustering": "config/clustering.yaml",
    "results": "results",
    "compensation": {"default": "keyword", "batches": {}},
    "transform": {
        "fluorescence": "logicle",
        "logicle": {"t": None, "w": 0.5, "m": 4.5, "a": 0},
        "arcsinh_cofactor": 150,
        "per_marker": {},
    },
    "keyword_allowlist": [],
    "qc": {"remove_margin_events": True},
    "longitudinal": {},
}


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None) -> dict:
    """Defaults overlaid with the file's values; a missing path means defaults only."""
    if path is None:
        return copy.deepcopy(DEFAULTS)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config: {exc}", path=path) from None
    if not isinstance(raw, dict):
        raise ConfigError("config must be a YAML mapping", path=path)
    return merge(DEFAULTS, raw)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="config YAML (default: built-in defaults)")
    parser.add_argument(
        "--settings",
        default=None,
        help="JSON object of config sections overriding --config (the workflow passes its own)",
    )


def settings_from_args(args: argparse.Namespace) -> dict:
    """--config file (or defaults) overlaid with --settings JSON."""
    cfg = load_config(args.config)
    if args.settings:
        try:
            extra = json.loads(args.settings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from None
        cfg = merge(cfg, {k: v for k, v in extra.items() if v is not None})
    return cfg
