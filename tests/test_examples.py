"""Every script in examples/ runs to completion (they are the documentation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def run_example(tmp_path_factory):
    """Run each example script once for this module; returns its CompletedProcess."""
    done = {}

    def run(script):
        if script not in done:
            # the examples print units such as mm³; a C/ASCII locale must not make them fail
            env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
            done[script] = subprocess.run(
                [sys.executable, str(script)], cwd=tmp_path_factory.mktemp(script.stem),
                capture_output=True, encoding="utf-8", errors="replace", timeout=600,
                env=env, check=False)
        return done[script]

    return run


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, run_example):
    result = run_example(script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "an example should show its result"


def test_readme_shows_what_the_example_prints(run_example):
    """The README quotes the output of examples/measure_a_phantom.py; it must be current."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    marker = "prints (this is `examples/measure_a_phantom.py`):"
    assert marker in readme
    quoted = readme.split(marker, 1)[1].split("```", 2)[1].strip().splitlines()
    result = run_example(Path(__file__).parents[1] / "examples" / "measure_a_phantom.py")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.splitlines()
    assert quoted and all(line in printed for line in quoted), (quoted, printed)
