"""The settings files and their one loader.

Three YAML files configure cytopipe: config/config.yaml (the workflow), config/gating.yaml (the
gating template) and config/clustering.yaml (clustering). Each has a JSON schema shipped in the
package, cytopipe/schemas/{config,gating,clustering}.schema.yaml, which is the one place that
says which keys exist, what they allow, their defaults and what they mean:

- `load_file(path, kind)` reads a file, validates it, fills the defaults from the schema and
  returns read-only settings (a `FrozenDict`: a dict that refuses changes). A bad value is a
  ConfigError naming the file, the key path (`qc.fail_removed_pct`), the value and what is
  allowed. `validated(data, kind, section=...)` does the same for a mapping already in memory
  (one section, for the stages that take theirs: `cytopipe.preprocess.qc.qc_settings`, ...).
- Rules relating two fields (z_extend <= z_threshold, a threshold named in the template exists)
  are checked by the stage that reads the settings, after the schema.
- Snakemake validates config.yaml against the same schema (Snakefile); `cytopipe config-docs`
  writes config/README.md from the schemas.

In a schema, `title` (when present) is the phrase for what a key allows, used by the error
messages and the README; `description` documents the key.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import numbers
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cytopipe.errors import ConfigError

SCHEMAS = Path(__file__).with_name("schemas")

# kind -> (the file it describes, what the file is called in messages)
KINDS = {
    "config": ("config/config.yaml", "config"),
    "gating": ("config/gating.yaml", "gating template"),
    "clustering": ("config/clustering.yaml", "clustering settings"),
}

UNKNOWN_KEY_HINT = (
    "an unknown setting is refused rather than ignored, so a typo cannot silently keep the default"
)


# --- read-only settings -------------------------------------------------------------------------


def _read_only(self, *args, **kwargs):
    raise TypeError("settings are read-only; copy them with cytopipe.config.thaw to change them")


class FrozenDict(dict):
    """A dict that refuses changes: settings as loaded. Still a dict for json, ==, isinstance."""

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self):
        return FrozenDict, (dict(self),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


class FrozenList(list):
    """A list that refuses changes (see FrozenDict)."""

    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = _read_only
    sort = reverse = __iadd__ = __imul__ = _read_only

    def __reduce__(self):
        return FrozenList, (list(self),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def freeze(value: Any) -> Any:
    """Mappings and lists, recursively, as FrozenDict and FrozenList."""
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A changeable deep copy (plain dicts and lists) of frozen settings."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


# --- schemas ------------------------------------------------------------------------------------


def schema_path(kind: str) -> Path:
    """The packaged schema of a settings file: kind is config, gating or clustering."""
    if kind not in KINDS:
        raise ValueError(f"unknown settings kind {kind!r}; use one of {', '.join(KINDS)}")
    return SCHEMAS / f"{kind}.schema.yaml"


# libyaml's loader where PyYAML was built with it: the Python one took a quarter of gating a
# real file (0.5 of 2 s), read again by every Snakemake job and every gated sample.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """YAML text as plain Python values (safe types only)."""
    return yaml.load(text, Loader=_LOADER)


@functools.cache
def _schema(kind: str) -> dict:
    return parse_yaml(schema_path(kind).read_text())


def schema(kind: str) -> FrozenDict:
    """The schema of a settings file, read-only."""
    return freeze(_schema(kind))


def _finite_number(checker, value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(checker, value) -> bool:
    return _finite_number(checker, value) and float(value).is_integer()


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _finite_number, "integer": _integer}
    ),
)


def _section_schema(kind: str, section: str | None) -> dict:
    root = _schema(kind)
    if section is None:
        return root
    return {**root["properties"][section], "$defs": root.get("$defs", {})}


@functools.cache
def _validator(kind: str, section: str | None) -> jsonschema.protocols.Validator:
    return _Validator(_section_schema(kind, section))


def _resolved(node: Any, root: Mapping) -> dict:
    """A schema node with its local `$ref` followed; the node's own keys (description, default,
    title) win over the target's."""
    if not isinstance(node, Mapping):
        return {}
    node = dict(node)
    while "$ref" in node:
        target: Any = root
        for part in node.pop("$ref").removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **node}
    return node


def _object_branch(node: Mapping, root: Mapping) -> dict:
    """The part of a node that describes a mapping: itself, or its oneOf/anyOf alternative."""
    if "properties" in node or "additionalProperties" in node:
        return dict(node)
    for alt in (*node.get("oneOf", ()), *node.get("anyOf", ())):
        alt = _resolved(alt, root)
        if "properties" in alt or "additionalProperties" in alt:
            return alt
    return {}


def _default(node: Mapping, root: Mapping) -> tuple[bool, Any]:
    for candidate in (node, _resolved(node, root)):
        if "default" in candidate:
            return True, copy.deepcopy(candidate["default"])
    return False, None


def _fill(value: Any, node: Any, root: Mapping) -> Any:
    """`value` with the schema's defaults for every missing key, known keys in schema order."""
    node = _resolved(node, root)
    if isinstance(value, Mapping):
        obj = _object_branch(node, root)
        props = obj.get("properties", {})
        extra = obj.get("additionalProperties")
        out = {}
        for key, sub in props.items():
            if key in value:
                out[key] = _fill(value[key], sub, root)
            else:
                has, default = _default(sub, root)
                if has:
                    out[key] = _fill(default, sub, root)
        for key, item in value.items():
            if key not in props:
                out[key] = _fill(item, extra, root) if isinstance(extra, Mapping) else item
        return out
    if isinstance(value, list):
        items = node.get("items")
        return [_fill(v, items, root) if isinstance(items, Mapping) else v for v in value]
    return value


@functools.cache
def _defaults(kind: str, section: str | None) -> FrozenDict:
    return freeze(_fill({}, _section_schema(kind, section), _schema(kind)))


def defaults(kind: str, section: str | None = None) -> FrozenDict:
    """The built-in settings of a file (or of one section of it): the schema's defaults."""
    return _defaults(kind, section)


# --- loading ------------------------------------------------------------------------------------


def _yaml_keys(value: Any) -> Any:
    """YAML 1.1 reads a bare `on:`/`off:` key (and yes/no/true/false) as a boolean: such keys
    are taken as the words on/off (the template's thresholds have a key `on`)."""
    if isinstance(value, dict):
        return {
            ("on" if k is True else "off" if k is False else k): _yaml_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_yaml_keys(v) for v in value]
    return value


PACKAGED = Path(__file__).resolve().parent / "defaults"
# The project's standard files that cytopipe also ships (cytopipe/defaults: the repository's own
# config/ files, linked, so there is one copy).
PROJECT_FILES = ("config/gating.yaml", "config/panel.yaml", "config/clustering.yaml")


def project_file(path: str | os.PathLike) -> Path:
    """The file a settings path names: as given when it exists, else, for the project's standard
    names (config/gating.yaml, config/panel.yaml, config/clustering.yaml), the copy shipped with
    cytopipe, so an installed cytopipe gates a file from any folder and a project's own
    config/ still overrides it."""
    p = Path(path)
    if not p.exists() and p.as_posix().removeprefix("./") in PROJECT_FILES:
        return PACKAGED / p.name
    return p


def read_yaml(path: str | os.PathLike, kind: str) -> Any:
    """A settings file's content as read (not validated); an empty file is an empty mapping."""
    try:
        raw = parse_yaml(project_file(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {KINDS[kind][1]}: {exc}", path=path) from None
    return {} if raw is None else _yaml_keys(raw)


def validated(
    data: Any,
    kind: str,
    *,
    section: str | None = None,
    source: str | os.PathLike | None = None,
) -> FrozenDict:
    """`data` checked against the schema of `kind` (or of one of its sections), with the
    defaults filled in, read-only. ConfigError for the first bad value: the file (`source`),
    the key path, the value and what is allowed."""
    prefix = () if section is None else (section,)
    for error in _validator(kind, section).iter_errors(data):
        raise _config_error(error, kind, source, prefix)
    return freeze(_fill(data, _section_schema(kind, section), _schema(kind)))


def load_file(path: str | os.PathLike, kind: str) -> FrozenDict:
    """A settings file read, validated and completed with its defaults (kind: config, gating or
    clustering)."""
    return validated(read_yaml(path, kind), kind, source=path)


def load_config(path: str | os.PathLike | None) -> FrozenDict:
    """config.yaml over the defaults; a missing path means the defaults only."""
    return defaults("config") if path is None else load_file(path, "config")


def merge(base: Mapping, override: Mapping) -> dict:
    """`override` over `base`, mappings merged key by key (plain dicts and lists out)."""
    out = thaw(base)
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = thaw(value)
    return out


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="config YAML (default: built-in defaults)")
    parser.add_argument(
        "--settings",
        default=None,
        help="JSON object of config sections overriding --config (the workflow passes its own)",
    )


def settings_from_args(args: argparse.Namespace) -> FrozenDict:
    """--config file (or defaults) overlaid with the --settings JSON sections, validated."""
    raw = read_yaml(args.config, "config") if args.config else {}
    if not args.settings:
        return validated(raw, "config", source=args.config)
    try:
        extra = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--settings is not valid JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise ConfigError("--settings must be a JSON object of config sections")
    source = f"{args.config} with --settings" if args.config else "--settings"
    if not isinstance(raw, Mapping):  # the file's own error, named as such
        return validated(raw, "config", source=args.config)
    merged = merge(raw, {k: v for k, v in extra.items() if v is not None})
    return validated(merged, "config", source=source)


# --- error messages -----------------------------------------------------------------------------


def _key_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _short(value: Any, limit: int = 80) -> str:
    text = repr(thaw(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _config_error(error, kind: str, source, prefix: tuple) -> ConfigError:
    root = _schema(kind)
    parts = [*prefix, *error.absolute_path]
    where = _key_path(parts) or KINDS[kind][1]
    node = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties":
        props = node.get("properties", {})
        unknown = next(k for k in error.instance if k not in props)
        return ConfigError(
            f"{_key_path([*parts, unknown])}: unknown key, use one of {', '.join(props)}",
            path=source,
            hint=UNKNOWN_KEY_HINT,
        )
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        sub = node.get("properties", {}).get(missing)
        what = f": it must be {describe(sub, root)}" if sub else ""
        return ConfigError(f"{_key_path([*parts, missing])} is missing{what}", path=source)
    alternatives = node.get(error.validator) if error.validator in ("anyOf", "oneOf") else None
    if alternatives and all(set(alt) == {"required"} for alt in alternatives):
        keys = [k for alt in alternatives for k in alt["required"]]
        return ConfigError(f"{where} needs {' or '.join(keys)}", path=source)
    allowed = describe(node, root)
    if error.validator == "enum" and isinstance(error.instance, str) and isinstance(parts[-1], str):
        return ConfigError(
            f"{where} must be {allowed}: {error.instance!r} is an unknown {parts[-1]}", path=source
        )
    return ConfigError(f"{where} must be {allowed}, not {_short(error.instance)}", path=source)


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def describe(node: Any, root: Mapping) -> str:
    """What a schema node allows, in words ("a number > 0", "mad or isolation_forest")."""
    node = _resolved(node, root)
    if "title" in node:
        return node["title"]
    if "const" in node:
        return _scalar(node["const"])
    if "enum" in node:
        return _or([_scalar(v) for v in node["enum"]])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return _or([describe(alt, root) for alt in node[key]])
    kind = node.get("type")
    if isinstance(kind, list):
        return _or([describe({**node, "type": k}, root) for k in kind])
    if kind in ("number", "integer"):
        bounds = [
            f"{op} {node[word]}"
            for word, op in (
                ("minimum", ">="),
                ("exclusiveMinimum", ">"),
                ("maximum", "<="),
                ("exclusiveMaximum", "<"),
            )
            if word in node
        ]
        return " ".join(
            ["an integer" if kind == "integer" else "a number", " and ".join(bounds)]
        ).strip()
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "string":
        return "non-empty text" if node.get("minLength") else "text"
    if kind == "array":
        items = _resolved(node.get("items"), root)
        plural = {
            "number": "numbers",
            "integer": "integers",
            "string": "names",
            "boolean": "true/false values",
            "object": "mappings",
            "array": "lists",
        }.get(items.get("type"), "items")
        n, m = node.get("minItems"), node.get("maxItems")
        if n is not None and n == m:
            return f"a list of {n} {plural}"
        return f"a {'non-empty ' if n else ''}list of {plural}"
    if kind == "object" or "properties" in node:
        return "a mapping"
    return "any value"


# --- documentation ------------------------------------------------------------------------------

DOCS_HEADER = """# Settings files

Every key of the three settings files, what it allows, its default and what it does.
Generated from the schemas in `cytopipe/schemas/` by `cytopipe config-docs --out
config/README.md`: edit the schemas, not this file (`tests/test_config.py` checks that it
is up to date and that every key the shipped files use is described here). A key left out of a
file takes its default; a key that is not listed is refused, except where a description says
other keys are passed on. `<name>` stands for a name you choose (a marker, a batch, a
threshold), `[]` for every item of a list.
"""


def _rows(
    node: Any, root: Mapping, path: str, seen: dict[str, str]
) -> Iterator[tuple[str, dict, str]]:
    """(key path, resolved node, where its keys are listed) of every key below `node`, depth
    first; a shared definition ($ref) has its keys listed once, at its first use."""
    obj = _object_branch(_resolved(node, root), root)
    children = [
        (f"{path}.{key}" if path else key, sub) for key, sub in obj.get("properties", {}).items()
    ]
    if isinstance(obj.get("additionalProperties"), Mapping):
        children.append((f"{path}.<name>" if path else "<name>", obj["additionalProperties"]))
    for key_path, raw in children:
        sub = _resolved(raw, root)
        items = sub.get("items")
        items = items if isinstance(items, Mapping) and _has_keys(items, root) else None
        ref = raw.get("$ref") if _has_keys(sub, root) or items else None
        if ref in seen:
            yield key_path, sub, seen[ref]
            continue
        if ref:
            seen[ref] = key_path
        yield key_path, sub, ""
        yield from _rows(sub, root, key_path, seen)
        if items:
            yield from _rows(items, root, f"{key_path}[]", seen)


def _has_keys(node: Any, root: Mapping) -> bool:
    return bool(_object_branch(_resolved(node, root), root))


def _flow(value: Any) -> str:
    """A default value as YAML flow text."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def config_docs() -> str:
    """config/README.md: one table per settings file, one row per key, from the schemas."""
    lines = [DOCS_HEADER]
    for kind, (file, name) in KINDS.items():
        root = _schema(kind)
        lines += [
            f"## `{file}` ({name})",
            "",
            _cell(root.get("description", "")),
            "",
            f"Schema: `cytopipe/schemas/{kind}.schema.yaml`.",
            "",
            "| key | allowed | default | what it does |",
            "|---|---|---|---|",
        ]
        for key_path, node, listed in _rows(root, root, "", {}):
            default = ""
            if "default" in node and not (node["default"] == {} and _object_branch(node, root)):
                text = _flow(node["default"])
                default = f"`{text}`" if len(text) <= 160 else "(built in, see the schema)"
            what = node.get("description", "")
            if listed:
                what += f" (keys as under `{listed}`)"
            lines.append(
                f"| `{key_path}` | {_cell(describe(node, root))} | {_cell(default)} | "
                f"{_cell(what)} |"
            )
        lines.append("")
    return "\n".join(lines)


def undescribed_keys(data: Any, kind: str) -> list[str]:
    """Key paths of a settings file's content that its schema does not describe."""
    root = _schema(kind)
    out: list[str] = []

    def walk(value: Any, node: Any, path: str) -> None:
        node = _resolved(node, root)
        if isinstance(value, Mapping):
            obj = _object_branch(node, root)
            props, extra = obj.get("properties", {}), obj.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key, extra if isinstance(extra, Mapping) else None)
                key_path = f"{path}.{key}" if path else str(key)
                if not _resolved(sub, root).get("description"):
                    out.append(key_path)
                else:
                    walk(item, sub, key_path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, node.get("items"), f"{path}[{i}]")

    walk(data, root, "")
    return out
