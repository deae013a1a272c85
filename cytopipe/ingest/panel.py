"""Panel harmonization: find each canonical marker's channel in a file, whatever the instrument
and year called it.

Archives name the same marker `CD19`, `CD19 PE-Cy7`, `cd19` or only by detector (`PE-Cy7-A`).
config/panel.yaml maps canonical names to aliases; $PnS is tried before $PnN because the stain
label is what a scientist typed, while the detector name only identifies a marker within one
panel design.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import yaml

from cytopipe.config import parse_yaml, project_file
from cytopipe.errors import ConfigError, FcsError

Panel = dict[str, list[str]]

# Scatter channels: linear, scaled by their range, never transformed or compensated.
SCATTER = ("FSC-A", "FSC-H", "SSC-A", "SSC-H")
# Mass cytometry's event length (the pushes an ion cloud spans): a doublet's is longer. Neither a
# stain nor scatter: linear, in units of the file's own median (preprocess.sample.event_length).
EVENT_LENGTH = "Event_length"
_TOKEN = re.compile(r"[\s;:/,_]+")
# a channel that pools several stains to exclude their cells ("CD3/CD14/CD19 Dump", "Lin-
# FITC"): naming CD3 first does not make it the CD3 channel (its CD19+ B cells would count as
# T cells and leave the B-cell gate); only a panel alias equal to the whole label maps it
_POOLED = re.compile(r"\b(?:dump|lineage|lin|exclusion)\b")
# a channel whose label names two markers ("CD3 FITC / CD19 PE", "CD4/CD8", "CD3/CD14/CD19"
# without the word 'dump'): two stains in one detector, neither marker's channel
_MARKER_WORD = re.compile(r"cd\d+[a-z]?")
_JOINED = re.compile(r"[/+&]")
# A marker joined to its fluorochrome by "-" or "." ("CD20-BV786", "CD27.APC"): split only when
# what follows names a fluorochrome, so "CD19-CAR" (the CAR, not CD19) stays whole.
_DYE_NAMES = (
    r"fitc|pe|apc|percp|pb|po|ecd|kro|ko|alexa|pacific|amcyan|bv\d+|buv\d+|bb\d+|af\d+|ef\d+"
    r"|sb\d+|nfb\d+|v\d{3}|r\d{3}|pc\d|pe-cy|apc-cy|apc-h7|spark|vio|qdot|qd\d+"
)
_WITH_DYE = re.compile(rf"^(?P<marker>[^-.]+)[-.](?:{_DYE_NAMES})")

# A fluorochrome written before its marker ("FITC CD3", "PE-Cy7 CD19", "Alexa Fluor 700 CD27",
# "APC-H7-CD20"): the dye, its tandem or number parts, then the marker.
# The spelled-out names come first: "alexa" alone would leave "fluor 700 cd27" as the marker.
_DYE_FIRST = re.compile(
    r"^(?:pacific (?:blue|orange)|alexa(?: fluor)? ?\d+|e ?fluor ?\d+|(?:bv|buv|af) \d+"
    rf"|pc\d\.\d|spark \w+|qdot ?\d+|{_DYE_NAMES})"
    r"(?:-(?:cy\d(?:\.\d)?|h7|vio ?\d+|dazzle(?: ?594)?|texas red|efluor ?\d+))*"
    r"[\s:/_-]+(?P<marker>\S.*)$"
)


_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212", "-"))


def _norm(text: str) -> str:
    """Case and whitespace folded, typographic dashes as "-" (labels typed in a word processor:
    "CD3\u2010FITC")."""
    return " ".join(str(text).translate(_DASHES).split()).casefold()


def load_panel(path: str | os.PathLike) -> Panel:
    """Read a panel file: a mapping from canonical marker to a list of aliases."""
    try:
        raw = parse_yaml(project_file(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read panel: {exc}", path=path, hint="check the file exists and is YAML"
        ) from None
    return parse_panel(raw, source=path)


def parse_panel(raw: object, source: str | os.PathLike | None = None) -> Panel:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            "panel must be a mapping from canonical marker to a list of aliases",
            path=source,
            hint='e.g. CD19: [CD19, "CD19 PE-Cy7"]',
        )
    panel: Panel = {}
    for name, aliases in raw.items():
        if isinstance(aliases, str):
            aliases = [aliases]
        if aliases is None:
            aliases = []
        if not isinstance(aliases, list) or not all(
            isinstance(a, str | int | float) for a in aliases
        ):
            raise ConfigError(f"aliases of {name!r} must be a list of names", path=source)
        panel[str(name)] = [str(name), *(str(a) for a in aliases)]
    return panel


def match_channels(panel: Panel, pnn: Sequence[str], pns: Sequence[str]) -> dict[str, int]:
    """Map canonical marker -> channel index. Unmatched markers are absent from the result.

    Order of evidence:
    1. an alias equal to $PnS, then to $PnN, then a scatter named by its filter ('FSC
       488/10-A');
    2. a $PnS that starts with a multi-word alias ("CD19 CAR-detect BV786" is the CAR
       detection reagent, not CD19; "L/D Aqua" the viability dye);
    3. a $PnS whose first token is the canonical name or a one-word alias
       ("CD21;FITC;530/30@488/B", "TCRb BV421" for CD3 in a mouse panel), then that token's
       part before a "-" or "." that joins it to a fluorochrome ("CD20-BV786", "CD27.APC"; not
       "CD19-CAR");
    4. the same after a fluorochrome written first ("FITC CD3", "PE-Cy7 CD19").
    Steps 2 and 3 read a channel without a $PnS by its $PnN ("CD3-A", "CD19 PE-A").
    FlowJo's display form "<detector> :: <stain>" is read as its stain (`_stain_part`), and a
    ":" separates tokens like a space ("CD3:BV421"). Steps 2-4 skip a pooled exclusion channel
    ("CD3/CD14/CD19 Dump", `_POOLED`), and steps 3-4 a label that names two markers ("CD3
    FITC / CD19 PE", `_markers_named`). A channel is used for one marker only, so a
    detector alias cannot steal a channel whose stain label named another marker. Where one
    label names several channels of a detector (FACSDiva can write it on FITC-A, FITC-H and
    FITC-W alike), the area is taken, then the height, then the width (`_signal_rank`): gating
    is on areas, and a width is no measure of the stain at all.
    """
    stains = [_norm(_stain_part(s)) for s in pns]
    names = [_norm(n) for n in pnn]
    after_dye = [(d["marker"] if (d := _DYE_FIRST.match(s)) else "") for s in stains]
    order = sorted(range(len(pnn)), key=lambda i: (_signal_rank(pnn[i]), i))
    found: dict[str, int] = {}
    taken: set[int] = set()

    def claim(candidates: list[str], pick) -> None:
        for marker, aliases in panel.items():
            if marker in found:
                continue
            keys = {_norm(a) for a in aliases}
            for i in order:
                label = candidates[i] if i < len(candidates) else ""
                if i not in taken and label and pick(marker, keys, label):
                    found[marker] = i
                    taken.add(i)
                    break

    def by_words(labels: list[str]) -> None:  # 2 and 3
        labels = ["" if _POOLED.search(s) else _plain(s) for s in labels]
        claim(labels, _multi_word)
        labels = ["" if len(_markers_named(panel, s)) > 1 else s for s in labels]
        first = [_TOKEN.split(s.strip())[0] if s.strip() else "" for s in labels]
        claim(first, _one_word)
        claim([(w["marker"] if (w := _WITH_DYE.match(t)) else "") for t in first], _one_word)

    claim(stains, _exact)
    claim(names, _exact)
    claim([_scatter_name(n) for n in names], _exact)
    # a channel without a stain label may carry the marker in its name ("CD3-A", "CD19 PE-A",
    # FlowJo's "B710-A :: CD19" in a file converted from its CSV export)
    by_words([s or _unsuffixed(_stain_part(n)) for s, n in zip(stains, names, strict=False)])
    claim(after_dye, _exact)
    by_words(after_dye)
    return found


def _markers_named(panel: Panel, label: str) -> set[str]:
    """The markers a label joining stains names ("cd3 fitc / cd19 pe": CD3 and cd19; more than
    one: two stains in one detector). Each word counts as the panel marker it is a one-word
    alias of, or as itself when it is a CD number the panel does not know (CD14, CD56);
    "live/dead" and "cd45r/b220" name one, a label without "/", "+" or "&" none."""
    if not _JOINED.search(label):
        return set()
    tight = re.sub(r"\s*/\s*", "/", label)
    words = {}
    for marker, aliases in panel.items():
        for alias in (_norm(a) for a in [marker, *aliases]):
            if "/" in alias and _starts_with(tight + " ", re.sub(r"\s*/\s*", "/", alias)):
                return {marker}  # a pooled stain the panel names ('VIVID/CD14': viability)
            words[alias] = marker
    named = set()
    for word in filter(None, re.split(r"[\s;:/,_+&()]+", label)):
        if word not in words and (joined := _WITH_DYE.match(word)):
            word = joined["marker"]  # "cd3-fitc"
        named.add(words.get(word, word))
    return {m for m in named if m in panel or _MARKER_WORD.fullmatch(m)}


def two_stain_notes(
    panel: Panel, pnn: Sequence[str], pns: Sequence[str], found: Mapping[str, int]
) -> list[str]:
    """One warning per channel whose label names several markers and that `found`
    (match_channels) left unused: a 'CD3 FITC / CD19 PE' channel is neither CD3 nor CD19, and
    the marker it leaves missing should say why."""
    notes = []
    used = set(found.values())
    for i, (name, stain) in enumerate(zip(pnn, pns, strict=False)):
        if i in used:
            continue
        label = _plain(_norm(_stain_part(stain)) or _norm(name))
        named = sorted(_markers_named(panel, label)) if not _POOLED.search(label) else []
        if len(named) > 1:
            notes.append(
                f"channel {name} ({stain or name}) names {', '.join(named)}: two stains in one "
                "detector, used for none of them (if it holds one, name it in the panel file)"
            )
    return notes


# mass cytometry names a stain by its metal isotope: "147Sm_CD19" ($PnS, Fluidigm's panels) and
# "CD19(Sm147)Di" ($PnN of CyTOF 1 and 2 files)
_METALS = "y|rh|pd|ag|cd|in|sn|te|i|xe|cs|ba|la|ce|pr|nd|pm|sm|eu|gd|tb|dy|ho|er|tm|yb|lu|hf|ta|w|re|os|ir|pt|au|pb|bi"
_ISOTOPE_FIRST = re.compile(rf"^\d{{2,3}}(?:{_METALS})[\s_.:-]+(?=\S)")
_ISOTOPE_AFTER = re.compile(rf"\((?:{_METALS})\d{{2,3}}\)d[di]$")


def _plain(label: str) -> str:
    """A normalised label without the spellings that hide its marker: "anti-CD19", "CD 19",
    "CD-19", "CD19+", "CD19PE" (a dye glued to the marker), "147Sm_CD19" and "CD19(Sm147)Di"
    (its isotope) -> "cd19 ..."."""
    label = _ISOTOPE_AFTER.sub("", _ISOTOPE_FIRST.sub("", label))
    label = re.sub(r"^(?:anti|α)[\s-]+(?:(?:human|hu|h)[\s-]+)?", "", label)
    label = re.sub(r"^(?:human[\s-]+|hu?(?=cd\d))", "", label)
    label = re.sub(r"\bcd[\s-]+(?=\d)", "cd", label)
    label = re.sub(r"(?<=\S)\+(?=\s|$)", "", label)
    return re.sub(rf"^(cd\d+)(?:{_DYE_NAMES})\S*", r"\1", label)


def _exact(marker: str, keys: set[str], label: str) -> bool:
    return label in keys


def _multi_word(marker: str, keys: set[str], label: str) -> bool:
    return any(_starts_with(label, k) for k in keys if _TOKEN.search(k))


def _one_word(marker: str, keys: set[str], label: str) -> bool:
    return label == _norm(marker) or label in keys


_SCATTER = re.compile(r"^(?P<kind>fsc|ssc) \S+-(?P<signal>[ah])$")


def _scatter_name(name: str) -> str:
    """'fsc-a' for a scatter channel named by its filter ('fsc 488/10-a'), else ''."""
    m = _SCATTER.match(name)
    return f"{m['kind']}-{m['signal']}" if m else ""


def _stain_part(label: str) -> str:
    """The stain of FlowJo's "<detector> :: <stain>" ("BV421-A :: CD3"), or of "<stain> ::
    <dye>"; any other label as it is."""
    if "::" not in label:
        return label
    left, right = (part.strip() for part in label.split("::", 1))
    return right if _signal_rank(left) != 1 else left


def _unsuffixed(name: str) -> str:
    """A channel name without its -A, -H or -W ("cd3-a" -> "cd3")."""
    return name.rsplit("-", 1)[0] if _signal_rank(name) != 1 else name


def _signal_rank(name: str) -> int:
    """0 for a detector's area channel (-A), 2 for its height (-H), 3 for its width (-W), 1 for
    any other name."""
    suffix = name.strip().upper().rsplit("-", 1)[-1] if "-" in name else ""
    return {"A": 0, "H": 2, "W": 3}.get(suffix, 1)


def _starts_with(label: str, alias: str) -> bool:
    """`label` is `alias` followed by more words ("cd19 car-detect bv786" after "cd19 car")."""
    return label.startswith(alias) and label[len(alias) : len(alias) + 1] in (" ", "-", ";", "_")


def describe_channels(pnn: Sequence[str], pns: Sequence[str]) -> str:
    return ", ".join(f"{n} ({s})" if s else n for n, s in zip(pnn, pns, strict=True))


NO_SCATTER = (
    "no scatter channels (mass cytometry or a scatterless export): cells, singlets and "
    "lymphocytes are not gated by scatter; T and B cells are gated among the live (CD45+) events"
)


def scatterless(found: Mapping[str, int]) -> bool:
    """No scatter channel at all: mass cytometry, or an export that dropped them."""
    return not any(m in found for m in SCATTER)


def lacking(found: Mapping[str, int], required: Sequence[str]) -> list[str]:
    """The required markers the file has no channel for. A file without scatter needs none:
    its scatter gates pass and its stains are gated as they are; a file with some scatter but
    not the required one is a naming problem, said as one."""
    none = scatterless(found)
    return [m for m in required if m not in found and not (none and m in SCATTER)]


def require_markers(
    found: Mapping[str, int],
    required: Sequence[str],
    pnn: Sequence[str],
    pns: Sequence[str],
    path: str,
) -> None:
    """Fail with the list of channels the file has, so the panel file can be fixed quickly;
    also where no channel but Time maps to a marker (nothing to gate: FlowKit's test files
    named 'channel_A', 'channel_B' ended in a traceback from the gating)."""
    if not set(found) - {"Time"}:
        raise FcsError(
            f"no channel maps to a marker of the panel; the file has: "
            f"{describe_channels(pnn, pns)}",
            path=path,
            hint="add the file's names for its scatter and stains to config/panel.yaml (or "
            "pass --panel): nothing can be gated otherwise",
        )
    missing = lacking(found, required)
    if missing:
        raise FcsError(
            f"no channel for required marker(s) {', '.join(missing)}; the file has: "
            f"{describe_channels(pnn, pns)}",
            path=path,
            hint="if the file names the marker otherwise, add that name to config/panel.yaml "
            "(or pass --panel); a panel without it (a T-cell panel without CD19) cannot be "
            "analysed here: `cytopipe autogate` still gates what it has",
        )
