"""Sample sheets: validation reports every problem at once, by line; paths resolve."""

from pathlib import Path

import pytest

from microarch.workflow import SampleSheetError, parse_spacing, read_samples

HEADER = "scan_id\tsubject\tsite\tvisit\trole\tpath\tmask_path\tspacing\n"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz", "c.aim", "mask.nii.gz"):
        (folder / name).write_bytes(b"x")
    return folder


def test_valid_sheet_reads_in_order_with_parsed_spacing(tmp_path, scans, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sheet = write(tmp_path / "config" / "samples.tsv",
                  "# a comment line\n" + HEADER
                  + "S1_V1\tS1\tradius\tV1\tbaseline\tscans/a.nii.gz\tscans/mask.nii.gz\t\n"
                  + "\n"
                  + "S1_V2\tS1\tradius\tV2\ton_ai\tscans/b.nii.gz\t\t0.082,0.0607,0.0607\n"
                  + "# S1_V3 is commented out\n"
                  + "S1_V3\tS1\tradius\tV3\tpost_withdrawal\tscans/c.aim\t\t0.082\n")
    samples = read_samples(sheet)
    assert list(samples.index) == ["S1_V1", "S1_V2", "S1_V3"]
    assert samples.loc["S1_V1", "mask_path"] == str(Path("scans/mask.nii.gz"))
    assert samples.loc["S1_V2", "mask_path"] is None
    assert samples.loc["S1_V1", "spacing"] is None
    assert samples.loc["S1_V2", "spacing"] == (0.082, 0.0607, 0.0607)
    assert samples.loc["S1_V3", "spacing"] == (0.082, 0.082, 0.082)
    assert list(samples["line"]) == [3, 5, 7]


def test_paths_resolve_in_workdir_first_then_next_to_the_sheet(tmp_path, scans, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the sheet lives with the scans and names them relative to itself
    sheet = write(scans / "sheet" / "samples.tsv",
                  HEADER + "S1_V1\tS1\tradius\tV1\tbaseline\t../a.nii.gz\t\t\n"
                  + "S1_V2\tS1\tradius\tV2\tother\tscans/b.nii.gz\t\t\n")
    samples = read_samples(sheet)
    assert Path(samples.loc["S1_V1", "path"]).resolve() == (scans / "a.nii.gz").resolve()
    assert samples.loc["S1_V2", "path"] == str(Path("scans/b.nii.gz"))


def test_every_problem_is_listed_at_once_with_its_line(tmp_path, scans, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sheet = write(tmp_path / "samples.tsv", HEADER
                  + "S1_V1\tS1\tradius\tV1\tbaseline\tscans/a.nii.gz\t\t\n"            # 2 ok
                  + "S1_V1\tS1\tradius\tV2\ton_ai\tscans/b.nii.gz\t\t\n"               # 3 dup id
                  + "S1_V3\tS1\tradius\tV3\tpost-AI\tscans/c.aim\t\t\n"                # 4 role
                  + "S1_V4\tS1\tradius\tV4\tother\tscans/missing.aim\t\t\n"            # 5 file
                  + "S1_V5\tS1\tradius\tV5\tother\tscans/a.nii.gz\tnone.nii\t-1\n"     # 6 mask, sp
                  + "S 2\t\ttibia\tV1\tbaseline\tscans/a.nii.gz\t\t0.1,0.1\n"          # 7 id, subj
                  + "S1_V7\tS1\tradius\tV1\tbaseline\tscans/b.nii.gz\t\t\n")           # 8 dup visit
    with pytest.raises(SampleSheetError) as caught:
        read_samples(sheet)
    problems = caught.value.problems
    text = str(caught.value)
    expected = [
        "line 3 (scan S1_V1): duplicate scan_id (first on line 2)",
        ("line 4 (scan S1_V3): role 'post-AI' is not one of baseline, on_ai, "
         "post_withdrawal, other"),
        "line 5 (scan S1_V4): scan file 'scans/missing.aim' not found",
        "line 6 (scan S1_V5): mask file 'none.nii' not found",
        "line 6 (scan S1_V5): spacing '-1' must be positive (mm)",
        "line 7 (scan S 2): scan_id 'S 2' may only hold letters",
        "line 7 (scan S 2): subject is empty; fill it in",
        "line 7 (scan S 2): spacing '0.1,0.1' must be one number or three",
        ("line 8 (scan S1_V7): visit 'V1' of subject 'S1' at site 'radius' is already on "
         "line 2"),
        "line 8 (scan S1_V7): a second baseline for subject 'S1' at site 'radius'",
    ]
    for message in expected:
        assert any(p.startswith(message) for p in problems), (message, problems)
    assert len(problems) == len(expected)
    assert text.startswith(f"{sheet}: {len(expected)} problems in the sample sheet")
    assert "line 2" not in " ".join(p.split(":")[0] for p in problems)


def test_missing_columns_and_empty_sheets(tmp_path):
    sheet = write(tmp_path / "s.tsv", "scan_id\tsubject\tpath\nA\tB\tx\n")
    with pytest.raises(SampleSheetError, match="missing columns site, visit, role"):
        read_samples(sheet, check_files=False)
    with pytest.raises(SampleSheetError, match="the sheet lists no scans"):
        read_samples(write(tmp_path / "h.tsv", HEADER), check_files=False)
    with pytest.raises(SampleSheetError, match="the sheet is empty"):
        read_samples(write(tmp_path / "e.tsv", "# nothing\n\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_samples(tmp_path / "absent.tsv")


def test_extra_columns_are_kept_and_files_can_be_left_unchecked(tmp_path):
    sheet = write(tmp_path / "s.tsv", HEADER.rstrip("\n") + "\tnotes\n"
                  + "A\tB\tradius\tV1\tbaseline\ts3/bucket/a.aim\t\t\tfirst scan\n")
    samples = read_samples(sheet, check_files=False)
    assert samples.loc["A", "notes"] == "first scan"
    assert samples.loc["A", "path"] == str(Path("s3/bucket/a.aim"))


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0607", (0.0607,) * 3), ("0.1 0.05 0.05", (0.1, 0.05, 0.05)),
    ("0.1;0.05;0.05", (0.1, 0.05, 0.05)), ("0.1x0.05x0.05", (0.1, 0.05, 0.05)),
    (0.082, (0.082,) * 3), ("", None), (None, None)])
def test_parse_spacing(text, expected):
    assert parse_spacing(text) == expected


@pytest.mark.parametrize("text", ["abc", "0.1,0.2", "0", "nan", "-0.1", "1,2,3,4"])
def test_parse_spacing_refuses(text):
    with pytest.raises(ValueError, match="spacing"):
        parse_spacing(text)
