"""Panel harmonization on real files from several instruments."""

import flowio
import pytest

from cytopipe.errors import ConfigError, FcsError
from cytopipe.ingest.fcs import read_fcs
from cytopipe.ingest.panel import (
    load_panel,
    match_channels,
    parse_panel,
    require_markers,
    two_stain_notes,
)


def labels(path):
    f = flowio.FlowData(str(path))
    chans = [f.channels[k] for k in sorted(f.channels, key=int)]
    return [c["pnn"] for c in chans], [c.get("pns", "").strip() for c in chans]


@pytest.fixture(scope="module")
def panel(repo):
    return load_panel(repo / "config" / "panel.yaml")


def test_human_lymphocyte_panel_100715(panel, shared_data):
    pnn, pns = labels(shared_data / "flowio/fcs_files/100715.fcs")
    found = match_channels(panel, pnn, pns)
    assert pnn[found["CD3"]] == "R780-A"
    assert pnn[found["CD19"]] == "G710-A"
    assert pnn[found["CD27"]] == "G660-A"
    assert pns[found["viability"]] == "VIVID / CD14"
    assert [pnn[found[m]] for m in ("FSC-A", "FSC-H", "SSC-A")] == ["FSC-A", "FSC-H", "SSC-A"]
    assert "CD20" not in found and "CD45" not in found


def test_stain_label_first_token_index_sorted(panel, shared_data):
    # $PnS like "CD19;APC-H7;780/60@640/A" (FACSAria index sort file)
    pnn, pns = labels(shared_data / "flowkit/index_sorted/index_sorted_example.fcs")
    found = match_channels(panel, pnn, pns)
    assert pnn[found["CD19"]] == "RL 780/60-A"
    assert pnn[found["viability"]] == "BL 695/40-A"


def test_pns_beats_pnn_and_channels_are_not_reused():
    panel = parse_panel({"CD19": ["PE-Cy7-A"], "CD20": ["CD20"]})
    # the detector alias PE-Cy7-A would match channel 0, but its stain says CD20
    found = match_channels(panel, ["PE-Cy7-A", "APC-A"], ["CD20", "cd19"])
    assert found == {"CD20": 0, "CD19": 1}


def test_a_marker_joined_to_its_fluorochrome_is_found_but_not_the_car(panel):
    """ "CD20-BV786", "CD27.APC", "CD38-PE-Cy7": the marker before a fluorochrome name; the
    CD19 CAR detection reagent labelled "CD19-CAR" is the CAR, never CD19, and a mouse
    congenic "CD45.1" is not split into CD45 and a dye."""
    pns = ["CD20-BV786", "CD27.APC", "CD38-PE-Cy7", "CD19-CAR", "CD19 BUV395"]
    found = match_channels(panel, [f"C{i}" for i in range(len(pns))], pns)
    assert found == {"CD20": 0, "CD27": 1, "CD38": 2, "CAR": 3, "CD19": 4}
    assert "CD45" not in match_channels(parse_panel({"CD45": ["CD45"]}), ["A"], ["CD45.1-x"])


def test_case_and_whitespace_insensitive():
    panel = parse_panel({"CD19": ["CD19 PE-Cy7"]})
    assert match_channels(panel, ["X"], ["  cd19   pe-cy7 "]) == {"CD19": 0}


@pytest.mark.parametrize(
    "stain",
    ["Zombie Aqua", "FVS780", "LIVE DEAD Aqua", "LIVE/DEAD Blue", "DAPI", "7-AAD",
     "Fixable Viability Dye eFluor 780", "FVD eF506", "Live/Dead Green", "L/D Aqua",
     "Live-Dead NIR", "LiveDead Violet", "Ghost Dye Violet 510", "DRAQ7", "SYTOX Blue",
     "TO-PRO-3", "FVD780", "LD-NIR", "Lv/Dd", "Fixable Aqua", "Fixable Near-IR"],
)  # fmt: skip
def test_vendor_viability_stains_map_to_viability(panel, stain):
    """Archives name the dye by its product (BD FVS, eBioscience FVD, BioLegend Zombie):
    without viability a sample's dead cells would stay in every gate, silently."""
    found = match_channels(panel, ["FSC-A", "SSC-A", "V525-A"], ["", "", stain])
    assert found.get("viability") == 2, (stain, found)


def test_a_dump_channel_is_not_viability(panel):
    """A 'Dump' channel holds CD3 or CD14 beside the dead-cell dye: taken as viability it would
    remove the T cells as 'dead'."""
    assert "viability" not in match_channels(panel, ["V525-A"], ["Dump"])


@pytest.mark.parametrize(
    "stain,marker",
    [("TCR-b", "CD3"), ("TCRβ", "CD3"), ("CD8a", "CD8"), ("CD8 alpha PerCP", "CD8"),
     ("CD8b", "CD8b")],
)  # fmt: skip
def test_chain_names_map_to_their_marker(panel, stain, marker):
    """Mouse TCR beta and the CD8 alpha chain as labs spell them: unmapped, a mouse panel had
    no T-cell gate, and CD8a beside CD8b no CD8 alpha-beta T cells."""
    assert match_channels(panel, ["FL1-A"], [stain]) == {marker: 0}


def test_a_label_on_a_detectors_height_and_width_too_names_its_area(panel):
    """FACSDiva can write a stain label on each of a detector's channels: the area is gated,
    not the height listed before it, and never the width (which measures the pulse, not the
    stain: CD3 on PE-W was a silent wrong T-cell gate)."""
    pnn = ["FSC-A", "FSC-H", "SSC-A", "FITC-H", "FITC-A", "PE-W", "PE-H", "PE-A", "FL3-H"]
    pns = ["", "", "", "CD19", "CD19", "CD3", "CD3", "CD3", "CD20"]
    found = match_channels(panel, pnn, pns)
    assert {m: pnn[found[m]] for m in ("CD19", "CD3", "CD20")} == {
        "CD19": "FITC-A", "CD3": "PE-A", "CD20": "FL3-H"
    }  # fmt: skip


@pytest.mark.parametrize(
    "stain,marker",
    [("BV421-A :: CD3", "CD3"), ("Comp-PE-Cy7-A :: CD20", "CD20"), ("CD19 :: PE", "CD19"),
     ("CD3:BV421", "CD3"), ("CD27 : APC", "CD27")],
)  # fmt: skip
def test_flowjo_display_labels_and_colons_name_the_stain(panel, stain, marker):
    """FlowJo shows a channel as '<detector> :: <stain>' and some exports keep that as the
    label; others join marker and dye with a colon. Both were unmapped (no gate, silently)."""
    assert match_channels(panel, ["FL1-A"], [stain]) == {marker: 0}


@pytest.mark.parametrize(
    "name,marker",
    [("B710-A :: CD19", "CD19"), ("Comp-R780-A :: CD20", "CD20"), ("V545-A::IgD", "IgD"),
     ("CD27 :: G780-A", "CD27")],
)  # fmt: skip
def test_flowjo_display_labels_as_channel_names_without_a_stain_label(panel, name, marker):
    """A file converted from FlowJo's CSV export carries '<detector> :: <stain>' as $PnN and
    no $PnS: read by its stain (session 25: unmapped, the marker missing)."""
    assert match_channels(panel, ["FSC-A", name], ["", ""]) == {"FSC-A": 0, marker: 1}


@pytest.mark.parametrize(
    "pnn",
    [["FS INT LIN", "SS INT LIN", "FS PEAK LIN"], ["FS", "SS", "FS PEAK"],
     ["FSC 488/10-A", "SSC 488/10-A", "FSC 488/10-H"], ["Forward Scatter", "Side Scatter", "x"]],
)  # fmt: skip
def test_scatter_of_other_instruments_by_their_names(panel, pnn):
    """Beckman Coulter LMD ('FS INT LIN'), Epics ('FS'), a scatter named by its filter ('FSC
    488/10-A'): without scatter a file gets no cells, singlets or lymphocyte gate."""
    found = match_channels(panel, [*pnn, "FL1-A"], ["", "", "", "CD3"])
    assert (found["FSC-A"], found["SSC-A"], found["CD3"]) == (0, 1, 3)
    assert found.get("FSC-H") == (2 if pnn[2] != "x" else None)


@pytest.mark.parametrize(
    "stain,marker",
    [("FITC CD3", "CD3"), ("FITC-CD3", "CD3"), ("PE-Cy7 CD19", "CD19"), ("APC-H7 CD20", "CD20"),
     ("PerCP-Cy5.5 CD38", "CD38"), ("Alexa Fluor 700 CD27", "CD27"), ("eFluor 450 IgD", "IgD"),
     ("PE-Dazzle 594 CD24", "CD24"), ("BV786 CD19 CAR-detect", "CAR"), ("APC Live/Dead", "viability")],
)  # fmt: skip
def test_a_fluorochrome_written_before_its_marker(panel, stain, marker):
    """Labs that write the dye first ('FITC CD3', 'PE-Cy7 CD19') had no marker mapped at all,
    so no B-cell gate; the CAR detection reagent stays the CAR after its dye too."""
    assert match_channels(panel, ["FL1-A"], [stain]) == {marker: 0}
    assert match_channels(panel, ["FL1-A"], ["PE"]) == {}  # a dye alone names nothing


@pytest.mark.parametrize(
    "stain,marker",
    [("anti-CD19", "CD19"), ("PE anti-CD19", "CD19"), ("CD 19", "CD19"), ("CD-19", "CD19"),
     ("CD19+", "CD19"), ("CD19PE-Cy7", "CD19"), ("CD27BV605", "CD27"), ("sIgD", "IgD"),
     ("CD3\u2010FITC", "CD3"), ("CD19\u2013PE-Cy7", "CD19"), ("hCD19", "CD19"),
     ("huCD19 PE", "CD19"), ("Anti-Human CD3", "CD3"), ("anti-hu CD20", "CD20"),
     ("CD45-KO", "CD45"), ("ViaKrome 808", "viability")],
)  # fmt: skip
def test_spellings_that_hide_the_marker(panel, stain, marker):
    """'anti-CD19', 'CD 19', 'CD19+', a dye glued on ('CD19PE-Cy7'), a typographic dash, the
    species written on ('hCD19', 'Anti-Human CD3'), Beckman's 'KO' (Krome Orange): each left
    the marker unmapped. Markers whose names run on stay themselves (CD45RA is not CD45)."""
    assert match_channels(panel, ["FL1-A"], [stain]) == {marker: 0}
    assert match_channels(panel, ["FL1-A"], ["CD45RA"]) == {}


def test_a_channel_without_a_stain_label_is_read_by_its_name(panel):
    """Some exports name the channel by its marker and leave $PnS empty ('CD3-A', 'CD19
    PE-A'); a detector name ('FITC-A', 'PE-Cy7-A') still names nothing, and a height never
    becomes the area's scatter."""
    pnn = ["FSC-A", "FSC-H", "SSC-A", "CD3-A", "CD19 PE-A", "FITC-A", "PE-Cy7-A"]
    found = match_channels(panel, pnn, [""] * len(pnn))
    assert found == {"FSC-A": 0, "FSC-H": 1, "SSC-A": 2, "CD3": 3, "CD19": 4}
    assert match_channels(panel, ["FSC-H", "SSC-H"], ["", ""]) == {"FSC-H": 0, "SSC-H": 1}


def test_mass_cytometry_names_map_past_their_isotope(panel):
    """A Helios file names stains '147Sm_CD19' and channels 'Sm147Di'; a CyTOF 2 file names
    channels 'CD19(Sm147)Di' and leaves $PnS empty. Neither mapped (a B-cell analysis refused
    for want of CD19); a marker that only looks like an isotope (Ki67) stays itself."""
    pnn = ["Time", "Y89Di", "Nd142Di", "Sm147Di", "CD20(Nd143)Di", "Pt195Di", "Ir191Di",
           "In115Di", "Er167Di"]  # fmt: skip
    pns = ["", "89Y_CD45", "142Nd_CD3", "147Sm_CD19", "", "195Pt_Cisplatin", "191Ir_DNA1",
           "115In_CD38", "167Er_Ki67"]  # fmt: skip
    assert match_channels(panel, pnn, pns) == {
        "Time": 0, "CD45": 1, "CD3": 2, "CD19": 3, "CD20": 4, "viability": 5, "DNA": 6,
        "CD38": 7,
    }  # fmt: skip
    assert match_channels(panel, ["CD3(Nd142)Dd", "CD19(Sm147)Dd"], ["", ""]) == {
        "CD3": 0, "CD19": 1,
    }  # fmt: skip
    assert match_channels(panel, ["FL1-A"], ["Ki67"]) == {}


def test_a_file_without_any_scatter_needs_none(panel):
    """A file with no scatter channel at all (mass cytometry, a scatterless export) is gated
    on its stains; one with some scatter but not the required one is a naming problem."""
    require_markers({"CD3": 0, "CD19": 1}, ["FSC-A", "SSC-A", "CD19"], ["a", "b"], ["CD3", "CD19"],
                    "x.fcs")  # fmt: skip
    with pytest.raises(FcsError, match="SSC-A"):
        require_markers({"FSC-A": 0, "CD19": 1}, ["FSC-A", "SSC-A", "CD19"], ["FSC-A", "b"],
                        ["", "CD19"], "x.fcs")  # fmt: skip
    with pytest.raises(FcsError, match="CD19"):
        require_markers({"CD3": 0}, ["FSC-A", "SSC-A", "CD19"], ["a"], ["CD3"], "x.fcs")


def test_missing_marker_lists_what_the_file_has(panel, shared_data):
    pnn, pns = labels(shared_data / "flowio/fcs_files/100715.fcs")
    found = match_channels(panel, pnn, pns)
    with pytest.raises(FcsError) as err:
        require_markers(found, ["CD19", "CD20"], pnn, pns, "100715.fcs")
    msg = str(err.value)
    assert "CD20" in msg and "G710-A (CD19)" in msg and "panel.yaml" in msg


def test_a_file_whose_channels_map_to_no_marker_says_so():
    with pytest.raises(FcsError, match="no channel maps to a marker"):
        require_markers({"Time": 0}, [], ["Time", "x"], ["", ""], "x.fcs")


@pytest.mark.parametrize("raw", [None, [], {"CD19": {"a": 1}}])
def test_bad_panel_is_a_config_error(raw):
    with pytest.raises(ConfigError):
        parse_panel(raw)


def test_scatter_of_other_instruments_maps_to_its_linear_channels(panel, shared_data):
    """A Sony file names its scatter 'FSC LinA' ... beside 'FSC LogA' ...: the linear ones are
    the scatter (none mapped before, so the file had no scatter gates); Partec/Sysmex 'FSC'."""
    s = read_fcs(shared_data / "flowio" / "fcs_files" / "variable_int_example.fcs")
    idx = match_channels(panel, s.pnn, s.pns)
    assert {m: s.pnn[idx[m]] for m in ("FSC-A", "FSC-H", "SSC-A", "SSC-H")} == {
        "FSC-A": "FSC LinA", "FSC-H": "FSC LinH", "SSC-A": "SSC LinA", "SSC-H": "SSC LinH"
    }  # fmt: skip
    assert match_channels(panel, ["FSC", "SSC", "FL1"], ["", "", "CD3"]) == {
        "FSC-A": 0, "SSC-A": 1, "CD3": 2
    }  # fmt: skip


@pytest.mark.parametrize(
    "stain", ["CD3/CD14/CD19 Dump", "Dump CD3 CD14 CD19", "Lin- FITC", "Lineage (CD3/CD19/CD56)"]
)
def test_a_pooled_exclusion_channel_is_no_marker_channel(panel, stain):
    """'CD3/CD14/CD19 Dump' was mapped as CD3: its CD19+ B cells counted as T cells and left
    the B-cell gate (CD3-), a B-cell count of 0 that reads as aplasia."""
    found = match_channels(panel, ["FSC-A", "SSC-A", "V500-A"], ["", "", stain])
    assert not {m for m, i in found.items() if i == 2}, found


@pytest.mark.parametrize(
    "stain", ["CD3 FITC / CD19 PE", "CD4/CD8", "CD3-FITC/CD19-PE", "CD3+CD19", "CD3 & CD19",
              "CD19/CD20", "CD19 CAR/EGFRt"]
)  # fmt: skip
def test_a_channel_named_for_two_markers_is_neither(panel, stain):
    """Two stains in one detector: 'CD3 FITC / CD19 PE' was read as CD3 by its first word (its
    B cells then T cells, a B-cell count of 0 that reads as aplasia), 'CD4/CD8' as CD4."""
    found = match_channels(panel, ["FSC-A", "SSC-A", "V500-A"], ["", "", stain])
    assert not {m for m, i in found.items() if i == 2}, found


def test_a_channel_named_for_two_markers_says_why_neither_is_there(panel):
    """The marker such a label leaves missing is 'no CD3 channel'; the file's warnings say
    which channel named it and why it was not used."""
    pnn, pns = ["FSC-A", "V450-A", "B710-A"], ["", "CD3 FITC / CD19 PE", "VIVID / CD14"]
    (note,) = two_stain_notes(panel, pnn, pns, match_channels(panel, pnn, pns))
    assert "V450-A (CD3 FITC / CD19 PE) names CD19, CD3" in note and "panel file" in note
    pnn, pns = ["V450-A", "B710-A"], ["CD3 BV421", "CD3/CD14/CD19 Dump"]
    assert two_stain_notes(panel, pnn, pns, match_channels(panel, pnn, pns)) == []
    # a channel the panel maps by its detector name is in use, whatever its label says
    mapped = {"CD4": 0}
    assert two_stain_notes(panel, ["FL1-H"], ["CD4/CD8"], mapped) == []


@pytest.mark.parametrize(
    "stain,marker",
    [("VIVID/CD14", "viability"), ("LIVE/DEAD Fixable Aqua", "viability"),
     ("CD45R/B220 PerCP", "CD20"), ("Live/Dead & CD14", "viability")],
)  # fmt: skip
def test_a_pooled_stain_the_panel_names_still_maps(panel, stain, marker):
    """Two words of one marker ('CD45R/B220') or a pooled stain the panel lists as one
    ('VIVID / CD14': dead cells and monocytes out together) are not two markers."""
    assert match_channels(panel, ["V500-A"], [stain]) == {marker: 0}


def test_init_says_a_file_without_scatter_is_gated_on_its_stains(panel):
    """`cytopipe init` groups files by panel: a mass cytometry panel (no scatter, CD19) can be
    analysed and says how; a flow panel with FSC-A but no SSC-A still cannot (a naming
    problem), and one with both says nothing more."""
    from cytopipe.ingest.inventory import FileInfo, panel_groups
    from cytopipe.preprocess.sample import REQUIRED

    files = [
        FileInfo("helios.fcs", ["Sm147Di", "Nd142Di"], ["147Sm_CD19", "142Nd_CD3"]),
        FileInfo("half.fcs", ["FSC-A", "B710-A"], ["", "CD19"]),
        FileInfo("flow.fcs", ["FSC-A", "SSC-A", "B710-A"], ["", "", "CD19"]),
    ]
    mass, half, flow = panel_groups(files, panel, REQUIRED)
    assert mass.b_cells and mass.why.endswith("(no scatter channels: gated on the stains alone)")
    assert not half.b_cells and "SSC-A" in half.why
    assert flow.b_cells and flow.why == "B-cell analysis possible"
