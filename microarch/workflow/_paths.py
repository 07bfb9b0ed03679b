"""Locate the Snakefile, ``pipelines/`` and ``config/``: checkout first, then the wheel.

From a checkout (including an editable install) the workflow lies next to the package:
``<repo>/Snakefile``, ``<repo>/pipelines``, ``<repo>/config``. A wheel carries a copy
inside the package, ``microarch/_workflow/`` (pyproject's hatch ``force-include``). An
editable install *also* leaves such a copy in site-packages, stale the moment a rule is
edited, which is why the checkout is looked for first (ecosystem notes D2).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _is_workflow(root: Path) -> bool:
    return (root / "Snakefile").is_file() and (root / "pipelines" / "rules").is_dir()


def _find_workflow(package_dir: Path) -> Path:
    candidates = (package_dir.parent, package_dir / "_workflow")
    for root in candidates:
        if _is_workflow(root):
            return root
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"the microarch workflow (Snakefile and pipelines/) was not found; looked in {looked}. "
        "Reinstall microarch (pip install microarch) or run from a checkout of its repository"
    )


def workflow_dir() -> Path:
    """Folder holding ``Snakefile``, ``pipelines/`` and ``config/``.

    The repository checkout when microarch is imported from one (also for editable
    installs), otherwise the copy packaged in the wheel (``microarch/_workflow``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        Neither location holds a Snakefile with ``pipelines/rules``.

    Examples
    --------
    >>> from microarch.workflow import workflow_dir
    >>> (workflow_dir() / "pipelines" / "rules" / "common.smk").is_file()
    True
    """
    return _find_workflow(_PACKAGE_DIR)


def snakefile() -> Path:
    """The workflow's ``Snakefile`` (see :func:`workflow_dir`).

    Examples
    --------
    >>> from microarch.workflow import snakefile
    >>> snakefile().name
    'Snakefile'
    """
    return workflow_dir() / "Snakefile"


def schema_path(name: str) -> Path:
    """Path of a JSON schema in ``pipelines/schemas``: ``"samples"`` or ``"config"``.

    Examples
    --------
    >>> from microarch.workflow import schema_path
    >>> schema_path("samples").name
    'samples.schema.yaml'
    """
    path = workflow_dir() / "pipelines" / "schemas" / f"{name}.schema.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no schema {name!r}: {path} does not exist")
    return path


def default_config_path() -> Path:
    """The workflow's default configuration, ``config/config.yaml``.

    Examples
    --------
    >>> from microarch.workflow import default_config_path
    >>> default_config_path().name
    'config.yaml'
    """
    return workflow_dir() / "config" / "config.yaml"
