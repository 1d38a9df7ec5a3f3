"""Reader edge cases: repair, malformed/empty files, out-of-slide coordinates, GeoJSON layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from histomil.annotations import AnnotationConfig, AnnotationError, read_annotations


def asap_xml(polygons: list[tuple[str, str, list[tuple[float, float]]]]) -> str:
    """ASAP XML text for (name, group, vertices) polygons."""
    anns = []
    for name, group, pts in polygons:
        coords = "".join(
            f'<Coordinate Order="{i}" X="{x}" Y="{y}" />' for i, (x, y) in enumerate(pts)
        )
        anns.append(
            f'<Annotation Name="{name}" Type="Polygon" PartOfGroup="{group}">'
            f"<Coordinates>{coords}</Coordinates></Annotation>"
        )
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(anns)
        + '</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" />'
        "</AnnotationGroups></ASAP_Annotations>"
    )


def feature(geometry: dict, cls: str | None = "Tumor") -> dict:
    props = {"objectType": "annotation"}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": props}


SQUARE = [(0, 0), (1000, 0), (1000, 1000), (0, 1000)]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_self_intersecting_polygon_is_repaired_with_a_warning(tmp_path, caplog):
    bowtie = [(0, 0), (1000, 1000), (1000, 0), (0, 1000)]
    dup = [(2000, 0), (2000, 0), (3000, 0), (3000, 1000), (3000, 1000), (2000, 1000)]
    path = write(tmp_path, "s1.xml", asap_xml([("bow", "_0", bowtie), ("dup", "Tumor", dup)]))
    with caplog.at_level("WARNING", logger="histomil.annotations.readers"):
        ann = read_annotations(path)
    assert ann.lesion.is_valid
    assert ann.lesion.area == pytest.approx(2 * 250_000 + 1_000_000)
    messages = [r.getMessage() for r in caplog.records]
    assert any("s1.xml" in m and "'bow'" in m and "repaired" in m for m in messages)
    assert ann.n_lesion == 2


def test_exclusion_group_and_unknown_groups(tmp_path, caplog):
    inner = [(200, 200), (400, 200), (400, 400), (200, 400)]
    path = write(
        tmp_path,
        "s2.xml",
        asap_xml([("t", "_1", SQUARE), ("x", "_2", inner), ("odd", "Stroma", inner)]),
    )
    ann = read_annotations(path)
    assert ann.region().area == pytest.approx(1_000_000 - 40_000)
    with pytest.raises(AnnotationError, match=r"s2\.xml.*unknown group.*'Stroma'"):
        read_annotations(path, AnnotationConfig(on_unknown="error"))


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("bad.xml", "<ASAP_Annotations><Annotations><Annotation", r"bad\.xml: malformed XML"),
        (
            "bad.geojson",
            '{"type": "FeatureCollection", "features": [',
            r"bad\.geojson: malformed JSON",
        ),
        ("empty.xml", "  \n", r"empty\.xml is empty"),
        ("empty.geojson", "", r"empty\.geojson is empty"),
        ("none.xml", asap_xml([]), r"none\.xml: no lesion polygons"),
        ("other.geojson", json.dumps({"type": "Topology"}), r"other\.geojson: not GeoJSON"),
        (
            "nogeom.geojson",
            json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature"}]}),
            r"nogeom\.geojson: feature 0 has no geometry",
        ),
        (
            "text.xml",
            asap_xml([("a", "_0", SQUARE)]).replace('X="0"', 'X="abc"', 1),
            r"text\.xml: annotation 'a' has a non-numeric coordinate",
        ),
        (
            "nan.xml",
            asap_xml([("b", "_0", SQUARE)]).replace('Y="0"', 'Y="nan"', 1),
            r"nan\.xml: annotation 'b' has a non-finite coordinate",
        ),
    ],
)
def test_unusable_files_give_clear_errors(tmp_path, name, text, pattern):
    with pytest.raises(AnnotationError, match=pattern):
        read_annotations(write(tmp_path, name, text))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.xml does not exist"):
        read_annotations(tmp_path / "nope.xml")


def test_coordinates_outside_the_slide(tmp_path):
    far = [(90_000, 90_000), (91_000, 90_000), (91_000, 91_000)]
    path = write(
        tmp_path, "far.geojson", json.dumps(feature({"type": "Polygon", "coordinates": [far]}))
    )
    read_annotations(path)  # size unknown: no check
    with pytest.raises(
        AnnotationError, match=r"far\.geojson: coordinates outside the slide.*10000 x 8000"
    ):
        read_annotations(path, slide_size=(10_000, 8_000))
    inside = write(tmp_path, "in.xml", asap_xml([("a", "_0", SQUARE)]))
    assert read_annotations(inside, slide_size=(1000, 1000)).lesion.area == 1_000_000


def test_geojson_layouts_multipolygon_holes_and_classes(tmp_path):
    ring = [list(p) for p in SQUARE] + [[0, 0]]
    hole = [[100, 100], [300, 100], [300, 300], [100, 300], [100, 100]]
    other = [[[5000, 0], [6000, 0], [6000, 1000], [5000, 1000], [5000, 0]]]
    multi = {"type": "MultiPolygon", "coordinates": [[ring, hole], other]}
    excl = {
        "type": "Polygon",
        "coordinates": [[[5000, 0], [5500, 0], [5500, 1000], [5000, 1000], [5000, 0]]],
    }
    features = [
        feature(multi, "Tumour"),
        feature(excl, "exclusion"),
        feature({"type": "Point", "coordinates": [1, 1]}, "Tumor"),
        feature({"type": "Polygon", "coordinates": [ring]}, None),
    ]
    as_list = write(tmp_path, "list.json", json.dumps(features))
    ann = read_annotations(as_list)
    assert ann.lesion.area == pytest.approx(1_000_000 - 40_000 + 1_000_000)
    assert ann.region().area == pytest.approx(1_000_000 - 40_000 + 500_000)
    single = write(tmp_path, "one.geojson", json.dumps(features[0]))
    assert read_annotations(single).lesion.equals(shapely.geometry.shape(multi))
    # unclassified polygons count only when "" is a lesion class
    cfg = AnnotationConfig(lesion_classes=("",))
    unclassified = read_annotations(as_list, cfg)
    assert unclassified.lesion.area == pytest.approx(1_000_000)


def test_region_padding_grows_lesion_not_exclusion(tmp_path):
    inner = [(400, 400), (600, 400), (600, 600), (400, 600)]
    ann = read_annotations(
        write(tmp_path, "p.xml", asap_xml([("t", "_0", SQUARE), ("x", "_2", inner)]))
    )
    padded = ann.region(100)
    assert padded.area > ann.region(0).area
    assert padded.intersection(shapely.box(*np.array([400, 400, 600, 600]))).area == 0
    with pytest.raises(ValueError, match="padding"):
        ann.region(-1)
