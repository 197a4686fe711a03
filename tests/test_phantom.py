import numpy as np
import pytest

from saerad.data.phantom import LABELS, findings_from_mesh, render


def pixels(findings=(), seed=3):
    return np.asarray(render(findings, seed=seed), dtype=np.int16)


def test_same_findings_and_seed_give_the_same_bytes():
    findings = [{"label": "pleural_effusion", "laterality": "left"}, {"label": "cardiomegaly", "severity": "mild"}]
    assert render(findings, 11).tobytes() == render(list(reversed(findings)), 11).tobytes()
    assert render(findings, 11).tobytes() != render(findings, 12).tobytes()
    image = render([], 0)
    assert image.mode == "L" and image.size == (256, 256)


def test_left_effusion_brightens_the_lower_right_of_the_image_only():
    normal, effusion = pixels(), pixels([{"label": "pleural_effusion", "laterality": "left", "severity": "moderate"}])
    diff = effusion - normal
    assert (diff[:, :128] == 0).all()  # the patient's right (image left) is untouched
    lower_right, upper_right = diff[150:200, 128:], diff[:110, 128:]
    assert lower_right.mean() > 3 and (upper_right == 0).all()


@pytest.mark.parametrize("label", [name for name, sided in LABELS.items() if sided])
def test_sided_findings_stay_on_their_side(label):
    normal = pixels()
    for side, other in (("left", slice(0, 118)), ("right", slice(138, 256))):
        diff = pixels([{"label": label, "laterality": side, "severity": "moderate"}]) - normal
        assert diff.any(), f"{label} {side} changed nothing"
        if label not in ("central_line", "pacemaker"):  # lines and leads run from the side to the heart
            assert not diff[:, other].any(), f"{label} {side} changed the other side"


@pytest.mark.parametrize("label", list(LABELS))
def test_every_finding_changes_the_image_visibly(label):
    diff = np.abs(pixels([{"label": label, "laterality": "left" if LABELS[label] else None}]) - pixels())
    assert (diff > 8).sum() >= 15, f"{label} is not visible"


def test_severity_and_zone_are_honoured():
    normal = pixels()
    effusions = [pixels([{"label": "pleural_effusion", "laterality": "right", "severity": s}])
                 for s in ("small", "moderate", "large")]
    changed = [(np.abs(e - normal) > 0).sum() for e in effusions]
    assert changed[0] < changed[1] < changed[2]
    upper = np.abs(pixels([{"label": "nodule", "laterality": "right", "zone": "upper"}]) - normal)
    lower = np.abs(pixels([{"label": "nodule", "laterality": "right", "zone": "lower"}]) - normal)
    assert np.argwhere(upper > 0)[:, 0].mean() < np.argwhere(lower > 0)[:, 0].mean()
    heart = [(pixels([{"label": "cardiomegaly", "severity": s}]) - normal != 0).sum() for s in ("mild", "severe")]
    assert 0 < heart[0] < heart[1]


def test_bad_findings_name_the_problem():
    with pytest.raises(ValueError, match="label"):
        render([{"label": "dragon"}])
    with pytest.raises(ValueError, match="laterality"):
        render([{"label": "pneumothorax", "laterality": "up"}])


def test_mesh_tags_map_to_structured_findings():
    assert findings_from_mesh(["Pleural Effusion/left/small", "Cardiomegaly/mild"]) == [
        {"label": "pleural_effusion", "laterality": "left", "zone": None, "severity": "small"},
        {"label": "cardiomegaly", "laterality": None, "zone": None, "severity": "mild"}]
    assert findings_from_mesh(["Opacity/lung/base/left"]) == [
        {"label": "opacity", "laterality": "left", "zone": "lower", "severity": None}]
    assert findings_from_mesh(["Catheters, Indwelling/right"])[0]["label"] == "central_line"
    assert findings_from_mesh(["Calcinosis/aorta"])[0]["label"] == "calcified_aorta"
    assert findings_from_mesh(["normal"]) == [] and findings_from_mesh(["Unheard Of/tag"]) == []
    for f in findings_from_mesh(["Lung/hypoinflation", "Hydropneumothorax/right", "Spine/degenerative"]):
        assert f["label"] in LABELS


def test_mapping_covers_at_least_90_percent_of_iu_reports():
    from saerad.data.iu import read_reports
    from saerad.data.mesh import unmapped_tags

    try:
        reports = read_reports()
    except FileNotFoundError as err:
        pytest.skip(f"IU X-ray reports unavailable here: {err}")
    assert len(reports) == 3955
    covered = sum(1 for r in reports if not unmapped_tags(r["mesh"]))
    assert covered / len(reports) >= 0.9
