"""Every script in examples/ runs to completion (they are the documentation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    # the examples print units such as mm³; a C/ASCII locale must not make them fail
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            encoding="utf-8", errors="replace", timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "an example should show its result"


def test_readme_shows_what_the_example_prints(tmp_path):
    """The README quotes the output of examples/measure_a_phantom.py; it must be current."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    marker = "prints (this is `examples/measure_a_phantom.py`):"
    assert marker in readme
    quoted = readme.split(marker, 1)[1].split("```", 2)[1].strip().splitlines()
    script = Path(__file__).parents[1] / "examples" / "measure_a_phantom.py"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            encoding="utf-8", errors="replace", timeout=600, env=env, check=True)
    printed = result.stdout.splitlines()
    assert quoted and all(line in printed for line in quoted), (quoted, printed)
