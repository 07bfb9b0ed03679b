"""init-config: a sample sheet from a folder of scans, blanks where nothing can be guessed."""

import pytest

from microarch.workflow import SampleSheetError, guess_samples, init_config, read_samples

DICOM_HEAD = b"\0" * 128 + b"DICM" + b"\0" * 64


def touch(folder, *names, content=b"x"):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def rows(table):
    return {r["scan_id"]: (r["subject"], r["site"], r["visit"], r["role"])
            for r in table.to_dict("records")}


def test_names_folders_and_bids(tmp_path):
    scans = tmp_path / "scans"
    touch(scans, "S01_radius_V1.nii.gz", "S01_radius_V2.nii.gz",
          "P002/2020-01-05/TIB.AIM;1", "P002/2021-02-03/TIB.AIM",
          "sub-03/ses-BL/radius.mha", "cohortA/visit2/DR_scan.nrrd",
          "C0001234.ISQ")
    touch(scans, "sub-04/ses-1/dicom/IM0001.dcm", "sub-04/ses-1/dicom/IM0002",
          content=DICOM_HEAD)
    table, notes = guess_samples(scans, relative_to=tmp_path)
    guessed = rows(table)
    assert guessed == {
        "S01_radius_V1": ("S01", "radius", "V1", ""),
        "S01_radius_V2": ("S01", "radius", "V2", ""),
        "P002_2020-01-05_TIB": ("P002", "tibia", "2020-01-05", ""),
        "P002_2021-02-03_TIB": ("P002", "tibia", "2021-02-03", ""),
        "sub-03_ses-BL_radius": ("03", "radius", "BL", "baseline"),
        "sub-04_ses-1_dicom": ("04", "", "1", ""),
        "cohortA_visit2_DR_scan": ("cohortA", "radius", "visit2", ""),
        "C0001234": ("", "", "", ""),
    }
    # sorted by subject, then site and visit; unknown subjects last
    assert list(table["scan_id"])[-1] == "C0001234"
    assert list(table["scan_id"])[:2] == ["sub-03_ses-BL_radius", "sub-04_ses-1_dicom"]
    paths = dict(zip(table["scan_id"], table["path"]))
    assert paths["sub-04_ses-1_dicom"] == "scans/sub-04/ses-1/dicom"
    assert paths["P002_2020-01-05_TIB"] == "scans/P002/2020-01-05/TIB.AIM;1"
    assert notes == []


def test_masks_become_mask_paths_and_derived_images_are_skipped(tmp_path):
    scans = tmp_path / "scans"
    touch(scans, "C0001234.AIM", "C0001234_GOBJ.AIM", "C0001234_SEG.AIM",
          "C0001234_TRAB_MASK.AIM", "C0005678.AIM", "orphan_GOBJ.AIM", "notes.txt")
    table, notes = guess_samples(scans, relative_to=tmp_path)
    assert list(table["scan_id"]) == ["C0001234", "C0005678"]
    assert list(table["mask_path"]) == ["scans/C0001234_GOBJ.AIM", ""]
    assert notes == [("skipped 2 mask or derived images (segmentations, maps): "
                      "C0001234_SEG.AIM, C0001234_TRAB_MASK.AIM"),
                     "1 contour mask(s) matched no scan: orphan_GOBJ.AIM"]


def test_init_config_writes_a_sheet_that_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scans = tmp_path / "scans"
    touch(scans, "S01_radius_V1_BL.nii.gz", "S01_radius_V2.nii.gz", "C0001234.AIM")
    result = init_config("scans", "study")
    assert result["samples"].read_text(encoding="utf-8").startswith("# Sample sheet written by")
    assert result["config"].read_text(encoding="utf-8").count("samples: study/samples.tsv") == 1
    assert result["blanks"] == 2
    with pytest.raises(SampleSheetError) as caught:
        read_samples(result["samples"])
    problems = caught.value.problems
    assert any("(scan S01_radius_V2): role is empty" in p for p in problems)
    assert sum("(scan C0001234)" in p for p in problems) == 4
    assert not any("S01_radius_V1_BL" in p for p in problems)  # fully guessed

    with pytest.raises(FileExistsError, match="--force"):
        init_config("scans", "study")
    again = init_config("scans", "study", overwrite=True)
    assert again["config"] is None  # an existing config.yaml is kept
    with pytest.raises(ValueError, match="never writes next to the scans"):
        init_config("scans", "scans/config")
    with pytest.raises(ValueError, match="no scans found"):
        (tmp_path / "empty").mkdir()
        init_config("empty", "out")
    with pytest.raises(NotADirectoryError):
        init_config("absent", "out")
