"""Samples' automated gates as one FlowJo 10 workspace (.wsp), so a lab reviews and corrects
them in FlowJo.

FlowKit writes a workspace of rectangle and polygon gates, but no Boolean gate, and it puts the
compensation only in the workspace's matrix list, where its own reader (and FlowJo, per sample)
does not look. cytopipe's strategies have Boolean ORs (a population with `or:`/`rescue` parts:
CD19-dim plasmablasts join the B cells). So each sample is written by FlowKit with every OR's
parts as sibling gates and the OR's children under its first part, and the XML is then
finished here: an `OrNode` named like the population (its `Dependents` the parts' paths, its
children moved under it), the sample's spillover matrix inside its `Sample`, the samples of a
batch merged into one workspace with unique sample and gate ids.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cytopipe.atomic import atomic_path
from cytopipe.errors import GatingError
from cytopipe.gating.gates import BooleanGate
from cytopipe.gating.gatingml import to_flowkit
from cytopipe.gating.strategy import Strategy

GATING_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
TRANSFORMS_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
BRANCHES = ("Population", "OrNode")


def _flat(strategy: Strategy) -> tuple[Strategy, dict[str, tuple[str, ...]]]:
    """`strategy` without its OR gates (children of an OR hang from its first part) and the
    ORs: population -> its parts."""
    ors = {g.id: g.refs for g in strategy.gates if isinstance(g, BooleanGate) and g.op == "or"}
    others = [g for g in strategy.gates if isinstance(g, BooleanGate) and g.op != "or"]
    if others:
        raise GatingError(
            f"gate {others[0].id!r}: a Boolean {others[0].op} cannot be written to FlowJo yet"
        )
    gates = [
        g if g.parent not in ors else replace(g, parent=ors[g.parent][0])
        for g in strategy.gates
        if g.id not in ors
    ]
    return replace(strategy, gates=gates), ors


def _sample_xml(strategy: Strategy, fcs: str | os.PathLike):
    """FlowKit's workspace of one sample, its ORs made OrNodes and its matrix in its Sample."""
    import flowkit as fk
    from lxml import etree  # FlowKit's own XML library

    flat, ors = _flat(strategy)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = fk.Session(gating_strategy=to_flowkit(flat), fcs_samples=[fk.Sample(str(fcs))])
        session.export_wsp(buffer, "All Samples")
    root = etree.fromstring(buffer.getvalue())
    sample = root.find("SampleList").find("Sample")
    sample.find("DataSet").set("uri", Path(fcs).resolve().as_uri())
    matrix = root.find("Matrices").find(f"{{{TRANSFORMS_NS}}}spilloverMatrix")
    if matrix is not None:
        sample.insert(1, copy.deepcopy(matrix))
    node = sample.find("SampleNode")
    for pop, parts in ors.items():
        _or_node(node, pop, parts)
    return root


def _named(node, name: str):
    for el in node.iter(*BRANCHES):
        if el.get("name") == name:
            return el
    raise GatingError(f"population {name!r} missing from the workspace FlowKit wrote")


def _or_node(sample_node, pop: str, parts: Sequence[str]) -> None:
    """Make `pop` an OrNode beside its parts, holding the children its first part held."""
    from lxml import etree

    first = _named(sample_node, parts[0])
    siblings = first.getparent()
    node = etree.SubElement(siblings, "OrNode", name=pop, annotation="", owningGroup="")
    deps = etree.SubElement(node, "Dependents")
    for part in parts:
        etree.SubElement(deps, "Dependent", name=part)  # made a path by _dependent_paths
    children = first.find("Subpopulations")
    if children is not None:
        node.append(children)


def _dependent_paths(sample_node) -> None:
    """Each Dependent's name as FlowJo (and FlowKit) read it: the part's path from the sample
    root, '/'-separated (after every OrNode holds its children, so paths are final)."""
    for node in sample_node.iter("OrNode"):
        ancestors = [a.get("name") for a in node.iterancestors(*BRANCHES)][::-1]
        for dep in node.find("Dependents"):
            dep.set("name", "/".join([*ancestors, dep.get("name")]))


def workspace(
    samples: Sequence[tuple[Strategy, str | os.PathLike]],
) -> tuple[bytes, list[tuple[str, str]]]:
    """One FlowJo 10 workspace of `samples` ((strategy, FCS file) each, file names unique):
    every sample with its own gates, compensation and transforms, in one group; and the
    samples left out, (file, why): one sample FlowKit cannot write does not cost the batch."""
    from lxml import etree

    root, refs, left_out = None, None, []
    next_gate, number = 1, 0
    for strategy, fcs in samples:
        try:
            doc = _sample_xml(strategy, fcs)
        except Exception as exc:  # FlowKit on an archive's file: one sample, not the batch
            left_out.append((str(fcs), f"{type(exc).__name__}: {exc}"))
            continue
        number += 1
        sample = doc.find("SampleList").find("Sample")
        sid = str(number)
        sample.find("DataSet").set("sampleID", sid)
        sample.find("SampleNode").set("sampleID", sid)
        ids = {}
        for el in sample.iter():
            for attr in (f"{{{GATING_NS}}}id", f"{{{GATING_NS}}}parent_id"):
                old = el.get(attr)
                if old is not None:
                    if old not in ids:
                        ids[old] = f"ID{next_gate}"
                        next_gate += 1
                    el.set(attr, ids[old])
        _dependent_paths(sample.find("SampleNode"))
        if root is None:
            root = doc
            refs = root.find("Groups").find("GroupNode").find("Group").find("SampleRefs")
            for ref in list(refs):
                refs.remove(ref)
        else:
            root.find("SampleList").append(sample)
        etree.SubElement(refs, "SampleRef", sampleID=sid)
    if root is None:  # no sample to write (all failed upstream): an empty workspace
        root = etree.Element("Workspace", version="20.0", flowJoVersion="10.6.2")
        group = etree.SubElement(etree.SubElement(root, "Groups"), "GroupNode", name="All Samples")
        etree.SubElement(etree.SubElement(group, "Group", name="All Samples"), "SampleRefs")
        etree.SubElement(root, "SampleList")
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data, left_out


def write_workspace(
    samples: Sequence[tuple[Strategy, str | os.PathLike]], path: str | os.PathLike
) -> list[tuple[str, str]]:
    """workspace() written to `path`; returns the samples left out, (file, why)."""
    data, left_out = workspace(samples)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return left_out
