"""Configuration: schema defaults, every problem listed, the shipped config is valid."""

import tomllib

import pytest
import yaml

from microarch.workflow import (
    ConfigError,
    default_config_path,
    load_config,
    schema_path,
    snakefile,
    validate_config,
    workflow_dir,
)
from microarch.workflow._paths import _find_workflow
from microarch.workflow._scan import _MEASURE_DEFAULTS
from microarch.workflow._subject import _LONGITUDINAL_DEFAULTS

from .conftest import REPO


def test_defaults_fill_every_section():
    config = validate_config({})
    assert config["samples"] == "config/samples.tsv"
    assert config["on_error"] == "record"
    assert config["segmentation"]["preset"] == "xct2"
    assert config["measure"]["maps"] == ["Tb.Th", "Tb.Sp", "plate_rod"]
    assert config["longitudinal"]["strategy"] == "sequential"
    assert "Conn.D" in config["cohort"]["trajectories"]


def test_library_defaults_match_the_schema():
    """The functions used without Snakemake behave as the workflow's defaults."""
    config = validate_config({})
    assert config["measure"] == _MEASURE_DEFAULTS
    assert config["longitudinal"] == _LONGITUDINAL_DEFAULTS


def test_shipped_config_is_valid_and_equals_the_defaults_where_set():
    with open(default_config_path(), encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    assert load_config() == validate_config(raw)
    defaults = validate_config({})
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert defaults[section][key] == value, (section, key)


def test_every_problem_is_listed():
    with pytest.raises(ConfigError) as caught:
        validate_config({"measure": {"smi": "yes", "maps": ["Tb.Th", "Tb.Xx"]},
                         "segmentaton": {}, "on_error": "ignore",
                         "longitudinal": {"lsc": {"Conn.D": -1}}})
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert any("segmentaton" in p for p in problems)
    assert any(p.startswith("measure.smi:") for p in problems)
    assert any(p.startswith("measure.maps.1:") for p in problems)
    assert any(p.startswith("on_error:") for p in problems)
    assert any(p.startswith("longitudinal.lsc.Conn.D:") for p in problems)


def test_whole_numbers_for_integer_settings_become_ints():
    # YAML "1.0" passes JSON Schema's integer type; the library takes ints only
    config = validate_config({"longitudinal": {"erosion_voxels": 2.0}})
    assert config["longitudinal"]["erosion_voxels"] == 2
    assert type(config["longitudinal"]["erosion_voxels"]) is int
    with pytest.raises(ConfigError, match="erosion_voxels"):
        validate_config({"longitudinal": {"erosion_voxels": 1.5}})


def test_load_config_merges_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("measure:\n  smi: false\nqc:\n  n_slices: 3\n", encoding="utf-8")
    config = load_config(path, overrides={"measure": {"plate_rod": False}})
    assert config["measure"]["smi"] is False and config["measure"]["plate_rod"] is False
    assert config["qc"] == {"n_slices": 3, "columns": 6}
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_checkout_is_found_first():
    assert workflow_dir() == REPO
    assert snakefile() == REPO / "Snakefile"
    assert schema_path("samples").is_file()
    with pytest.raises(FileNotFoundError, match="no schema"):
        schema_path("nonsense")


def test_packaged_copy_is_found_when_there_is_no_checkout(tmp_path):
    site = tmp_path / "site-packages"
    package = site / "microarch"
    (package / "_workflow" / "pipelines" / "rules").mkdir(parents=True)
    (package / "_workflow" / "Snakefile").write_text("# packaged\n", encoding="utf-8")
    assert _find_workflow(package) == package / "_workflow"
    # a checkout next to the package wins over a (stale) packaged copy
    (site / "pipelines" / "rules").mkdir(parents=True)
    (site / "Snakefile").write_text("# checkout\n", encoding="utf-8")
    assert _find_workflow(package) == site
    with pytest.raises(FileNotFoundError, match="was not found"):
        _find_workflow(tmp_path / "elsewhere" / "microarch")


def test_the_wheel_ships_the_workflow_where_it_is_looked_for():
    with open(REPO / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)
    included = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included == {"Snakefile": "microarch/_workflow/Snakefile",
                        "pipelines": "microarch/_workflow/pipelines",
                        "config": "microarch/_workflow/config"}


def test_the_default_sheet_is_the_demo_cohort():
    """config/samples.tsv lists sample_data/samples.tsv's scans, from the repository root."""
    from microarch.workflow import read_samples

    config = load_config()
    demo = read_samples(REPO / config["samples"], workdir=REPO)
    shipped = read_samples(REPO / "sample_data" / "samples.tsv", workdir=REPO)
    assert list(demo.index) == list(shipped.index)
    columns = ["subject", "site", "visit", "role"]
    assert demo[columns].equals(shipped[columns])
    for scan_id in demo.index:
        assert (REPO / demo.loc[scan_id, "path"]).resolve() == \
            (REPO / shipped.loc[scan_id, "path"]).resolve()
