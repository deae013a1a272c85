"""One config layer: the three settings files are described by the schemas shipped in
cytopipe/schemas (keys, allowed values, defaults, documentation), read by one loader that names
the file, the key, the value and what is allowed, and documented in config/README.md."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
import yaml

from cytopipe import config
from cytopipe.cli import main as run_cli
from cytopipe.errors import ConfigError
from cytopipe.gating.template import load_template

# JSON Schema keywords the schemas may use: a key outside this list is a mistake (e.g. a YAML
# flow mapping `{description: a, b}` whose comma made "b" a key).
KEYWORDS = {
    "$schema", "$ref", "$defs", "title", "description", "default", "type", "enum", "const",
    "properties", "additionalProperties", "required", "items", "prefixItems", "minItems",
    "maxItems", "minProperties", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "pattern", "oneOf", "anyOf", "allOf", "if", "then", "not",
}  # fmt: skip


def test_config_readme_is_generated_from_the_schemas(repo):
    assert (repo / "config" / "README.md").read_text() == config.config_docs(), (
        "config/README.md is out of date: run `cytopipe config-docs --out config/README.md`"
    )


@pytest.mark.parametrize("kind", list(config.KINDS))
def test_every_key_of_the_shipped_files_is_described(repo, kind):
    """A key the schema does not describe (e.g. a new method parameter in gating.yaml, which
    the schema lets through) must get a description in the schema and so in the README."""
    path = repo / config.KINDS[kind][0]
    assert config.undescribed_keys(config.read_yaml(path, kind), kind) == []
    config.load_file(path, kind)  # and the file is valid


def _nodes(node, path="#"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("default", "enum", "const", "required"):
                continue
            yield from _nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, f"{path}/{i}")


@pytest.mark.parametrize("kind", list(config.KINDS))
def test_schemas_use_known_keywords_and_describe_every_key(kind):
    schema = yaml.safe_load(config.schema_path(kind).read_text())
    for path, node in _nodes(schema):
        if path.endswith("/properties") or path.endswith("/$defs"):
            continue
        assert set(node) <= KEYWORDS, (path, set(node) - KEYWORDS)
        if "/allOf/" in path:  # if/then conditions, not keys
            continue
        for key, sub in node.get("properties", {}).items():
            described = config._resolved(sub, schema).get("description")
            assert described, f"{path}/properties/{key} has no description"
    config._Validator.check_schema(schema)


def test_defaults_come_from_the_schema():
    cfg = config.load_config(None)
    assert cfg["qc"]["fail_removed_pct"] == 30.0 and cfg["transform"]["logicle"]["w"] == 0.5
    assert cfg["longitudinal"]["reference_ranges"]["unit"] == "cells_per_ul"
    assert config.defaults("clustering")["som"]["xdim"] == 15
    partial = config.validated({"qc": {"z_threshold": 6}}, "config")
    assert partial["qc"]["z_threshold"] == 6 and partial["qc"]["z_extend"] == 3.5


def test_settings_are_read_only_but_still_dicts(repo):
    cfg = config.load_config(repo / "config" / "config.yaml")
    with pytest.raises(TypeError, match="read-only"):
        cfg["qc"]["z_threshold"] = 1
    with pytest.raises(TypeError, match="read-only"):
        cfg["keyword_allowlist"].append("$FIL")
    assert isinstance(cfg, dict) and json.loads(json.dumps(cfg)) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    mine = config.thaw(cfg)
    mine["qc"]["z_threshold"] = 1
    assert cfg["qc"]["z_threshold"] == 5.0


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"qc": {"fail_removed_pct": 130}}, ["qc.fail_removed_pct", "130", "<= 100"]),
        ({"transform": {"logicle": {"w": "wide"}}}, ["transform.logicle.w", "'wide'", "auto"]),
        ({"compensation": {"default": "spill"}}, ["compensation.default", "keyword or none"]),
        ({"longitudinal": {"aplasia_pct": 1}}, ["longitudinal.aplasia_pct", "unknown key"]),
    ],
)
def test_a_bad_value_names_the_file_key_value_and_what_is_allowed(tmp_path, edit, words):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(edit))
    with pytest.raises(ConfigError) as err:
        config.load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    for word in words:
        assert word in str(err.value)


def test_settings_json_overrides_the_file_and_is_validated(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("qc: {z_threshold: 6}\n")
    parser = argparse.ArgumentParser()
    config.add_settings_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--settings", '{"qc": {"z_extend": 2}}'])
    cfg = config.settings_from_args(args)
    assert (cfg["qc"]["z_threshold"], cfg["qc"]["z_extend"]) == (6, 2)
    args = parser.parse_args(["--config", str(path), "--settings", '{"qc": {"z_extend": "x"}}'])
    with pytest.raises(ConfigError, match=r"with --settings: qc\.z_extend must be a number"):
        config.settings_from_args(args)


def test_gating_schema_checks_structure_and_keeps_method_parameters_open(repo, tmp_path):
    raw = yaml.safe_load((repo / "config" / "gating.yaml").read_text())
    raw["thresholds"]["cd3_b"]["new_parameter"] = [1, 2]  # a parameter the schema does not know
    path = tmp_path / "gating.yaml"
    path.write_text(yaml.safe_dump(raw))
    cd3 = next(t for s in load_template(path) for t in s.thresholds() if t.name == "cd3_b")
    assert cd3.params["new_parameter"] == [1, 2] and cd3.on == "lymphocytes"  # `on:` key kept
    del raw["thresholds"]["cd3_b"]["dim"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"thresholds\.cd3_b\.dim is missing"):
        load_template(path)


def test_one_config_schema_used_by_the_snakefile(repo):
    assert not (repo / "workflow" / "schemas" / "config.schema.yaml").exists()
    assert 'schema_path("config")' in (repo / "Snakefile").read_text()


def test_config_check_command(repo, tmp_path, capsys):
    assert run_cli(["config-check", str(repo / "config" / "gating.yaml"), "--kind", "gating"]) == 0
    bad = tmp_path / "clustering.yaml"
    bad.write_text("som: {xdim: 0}\n")
    assert run_cli(["config-check", str(bad), "--kind", "clustering"]) == 2
    assert "som.xdim must be an integer >= 1, not 0" in capsys.readouterr().err


def _population_edited(repo, tmp_path, population: str, edit) -> Path:
    """The default template with one population's entry changed by `edit`, written out."""
    raw = yaml.safe_load((repo / "config" / "gating.yaml").read_text())
    edit(next(p for p in raw["populations"] if p["id"] == population))
    path = tmp_path / "gating.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_stain_check_against_a_population_not_yet_gated_is_refused(repo, tmp_path):
    """`stained:` compares a population with one gated before it (the T cells): naming a
    population below it is a template error, said when the template is read."""
    path = _population_edited(
        repo, tmp_path, "b_cd20pos", lambda p: p["stained"][0].update(than="b_naive")
    )
    with pytest.raises(ConfigError, match=r"b_cd20pos: stained: 'b_naive' must be defined above"):
        load_template(path)


def test_a_contradiction_whose_events_may_be_a_population_the_template_lacks_is_refused(
    repo, tmp_path
):
    path = _population_edited(
        repo, tmp_path, "t_cd4", lambda p: p["contradicted"][0].update(instead="t_cd8_typo")
    )
    with pytest.raises(ConfigError, match=r"t_cd4: 'instead: t_cd8_typo' names no population"):
        load_template(path)


def test_a_missed_check_within_a_population_the_template_lacks_is_refused(repo, tmp_path):
    path = _population_edited(
        repo, tmp_path, "plasmablasts", lambda p: p["missed"][0].update(within="lymphs")
    )
    with pytest.raises(ConfigError, match=r"plasmablasts: 'within: lymphs' names no population"):
        load_template(path)
