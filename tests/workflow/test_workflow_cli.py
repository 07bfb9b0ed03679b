"""The microarch command: arguments handed to Snakemake, one-scan commands, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import microarch
from microarch import cli
from microarch.workflow import default_config_path, snakefile

from .conftest import VISITS, make_cohort, synthetic_density, write_scan


@pytest.fixture
def captured(monkeypatch):
    calls = []

    def fake(argv):
        calls.append(list(argv))
        return 0

    monkeypatch.setattr(cli, "_call_snakemake", fake)
    return calls


def test_run_hands_the_workflow_and_extra_flags_to_snakemake(tmp_path, monkeypatch,
                                                             captured):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("{}\n", encoding="utf-8")
    assert cli.main(["run", "--keep-going", "-n", "results/metrics.tsv"]) == 0
    assert captured[-1] == ["--snakefile", str(snakefile()), "--keep-going", "-n",
                            "results/metrics.tsv"]
    cli.main(["run", "--keep-going"])
    assert captured[-1][-3:] == ["--cores", "all", "--keep-going"]
    cli.main(["run", "--cores", "3", "--profile", "profiles/slurm"])
    assert captured[-1][-4:] == ["--cores", "3", "--profile", "profiles/slurm"]
    cli.main(["run", "-j", "100", "--config", "on_error=raise"])
    assert "--cores" not in captured[-1]
    assert captured[-1][-4:] == ["-j", "100", "--config", "on_error=raise"]


def test_run_elsewhere_uses_the_packaged_config_and_absolute_paths(tmp_path, monkeypatch,
                                                                    captured):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--samples", "my.tsv", "--directory", "out"]) == 0
    argv = captured[-1]
    assert argv[:4] == ["--snakefile", str(snakefile()), "--directory", "out"]
    assert argv[argv.index("--configfile") + 1] == str(default_config_path().resolve())
    assert argv[argv.index("--config") + 1] == f"samples={tmp_path / 'my.tsv'}"
    assert cli.main(["run", "--samples", "my.tsv", "--config", "a=1"]) == 2
    assert cli.main(["run"]) == 2  # no configuration and no sample sheet here


def test_report_and_help(tmp_path, monkeypatch, captured, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("{}\n", encoding="utf-8")
    cli.main(["report", "out.zip", "--configfile", "c.yaml"])
    argv = captured[-1]
    assert argv[argv.index("--configfile") + 1] == str(tmp_path / "c.yaml")
    assert argv[-2:] == ["--report", "out.zip"]
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"microarch {microarch.__version__}"
    with pytest.raises(SystemExit) as caught:
        cli.main(["measure", "x.aim", "--no-such-option"])
    assert caught.value.code == 2


def test_measure_one_scan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_scan(tmp_path / "scan.nii.gz", synthetic_density(3, 0.3, shape=(12, 40, 40)))
    code = cli.main(["measure", "scan.nii.gz", "-o", "out", "--no-smi", "--no-plate-rod",
                     "--threads", "1"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert output.startswith("scan: ok")
    assert "Tb.Th" in output and "mm" in output
    record = json.loads((tmp_path / "out" / "scan" / "metrics.json").read_text(encoding="utf-8"))
    assert record["status"] == "ok" and record["provenance"]["threads"] == 1
    assert "pBV/TV" not in record["measures"]

    (tmp_path / "bad.aim").write_bytes(b"not a scan")
    assert cli.main(["measure", "bad.aim", "-o", "out"]) == 1
    assert "failed at read" in capsys.readouterr().err
    assert cli.main(["measure", "absent.aim", "-o", "out"]) == 1
    assert cli.main(["measure", "scan.nii.gz", "--spacing", "0,1"]) == 2


def test_compare_one_subject(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    paths = []
    for visit, _, fraction, shift in VISITS:
        density = synthetic_density(5, fraction, shape=(12, 40, 40), shift=shift)
        paths.append(str(write_scan(tmp_path / f"S7_{visit}.nii.gz", density)))
    code = cli.main(["compare", *paths, "--subject", "S7", "--site", "radius", "-o", "cmp",
                     "--no-smi", "--no-plate-rod", "--threads", "1"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "S7_V2 (on_ai): ok" in output and "comparison: ok" in output
    assert "connections of the baseline tracked to V3" in output
    for name in ("change", "memory", "registration", "remodelling", "connections"):
        assert (tmp_path / "cmp" / f"{name}.tsv").is_file(), name
    memory = pd.read_csv(tmp_path / "cmp" / "memory.tsv", sep="\t")
    assert {"Conn.D", "BV/TV"} <= set(memory["measure"])
    assert cli.main(["compare", paths[0]]) == 2  # one scan is not a comparison
    assert "at least two scans" in capsys.readouterr().err


def test_init_config_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_cohort(tmp_path / "study", subjects=("S01",), shape=(8, 32, 32))
    assert cli.main(["init-config", "study/scans", "-o", "cfg"]) == 0
    output = capsys.readouterr().out
    assert "cfg/samples.tsv: 3 scans of 1 subjects" in output
    assert "rows have blank cells" in output  # roles cannot be guessed from V1, V2, V3
    assert cli.main(["init-config", "study/scans", "-o", "cfg"]) == 2
    assert "exists" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "microarch.cli", "--help"],
                            capture_output=True, encoding="utf-8", errors="replace",
                            timeout=60, check=False)
    assert result.returncode == 0
    for command in ("run", "measure", "compare", "phantom", "init-config", "report"):
        assert command in result.stdout
    # the CLI imports Snakemake only when it runs the workflow
    probe = ("import sys, microarch.cli; microarch.cli._parser(); "
             "print('snakemake' in sys.modules, 'numba' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                            encoding="utf-8", errors="replace", timeout=60, check=False)
    assert result.stdout.split() == ["False", "False"]


def test_phantom_command(tmp_path):
    from microarch.io import read_scan

    path = tmp_path / "bone.nii.gz"
    assert cli.main(["phantom", "random", "-o", str(path), "--shape", "8", "16", "16"]) == 0
    scan = read_scan(path)
    assert scan.shape == (8, 16, 16) and scan.units == "binary"
    assert Path(path).stat().st_size > 0


def test_phantom_cohort_hands_over_to_the_demo_writer(tmp_path, monkeypatch, capsys):
    from microarch import phantoms

    calls = []

    def fake(directory, **options):
        calls.append((Path(directory), options))
        return [Path(directory) / "samples.tsv"]

    monkeypatch.setattr(phantoms, "write_demo_cohort", fake)
    assert cli.main(["phantom", "cohort", str(tmp_path / "demo"), "--subjects", "2"]) == 0
    assert calls == [(tmp_path / "demo", {"n_subjects": 2})]
    assert "demo cohort of 2 subjects" in capsys.readouterr().out
    assert cli.main(["phantom", "cohort", "a", "-o", "b"]) == 2
