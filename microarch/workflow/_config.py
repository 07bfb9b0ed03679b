"""Read and validate the workflow configuration, filling in the schema's defaults."""

from __future__ import annotations

import copy
import os
from pathlib import Path


class ConfigError(ValueError):
    """The workflow configuration has problems; ``problems`` lists them all."""

    def __init__(self, source, problems):
        self.source = str(source)
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{self.source}: {count} problem{'s' if count != 1 else ''} in the configuration"
        super().__init__("\n  ".join([header, *self.problems]))


def _load_yaml(path):
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _fill_defaults(value, schema):
    """Copy of ``value`` with the schema's defaults filled in, recursively (objects only).

    Whole numbers where the schema wants an integer become ints on the way: JSON Schema
    counts ``1.0`` as an integer, so a YAML ``1.0`` passes validation, but the library's
    counts (``erosion_voxels``, seeds, iterations) accept ints only.
    """
    if not isinstance(schema, dict):
        return value
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if schema.get("type") != "object" or not isinstance(value, dict):
        return value
    result = dict(value)
    for name, sub in schema.get("properties", {}).items():
        if name not in result and "default" in sub:
            result[name] = copy.deepcopy(sub["default"])
        if name in result:
            result[name] = _fill_defaults(result[name], sub)
    return result


def validate_config(config, *, schema=None, source="configuration"):
    """Validate a configuration mapping; return a copy with every default filled in.

    Parameters
    ----------
    config : mapping
        The configuration (e.g. Snakemake's ``config`` or a parsed ``config.yaml``).
    schema : dict or path, optional
        Default ``pipelines/schemas/config.schema.yaml``.
    source : str
        Named in the error message (e.g. the file the configuration came from).

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        Lists every problem (unknown keys, wrong types, values out of range).

    Examples
    --------
    >>> config = validate_config({"measure": {"smi": False}})
    >>> config["measure"]["smi"], config["measure"]["plate_rod"], config["on_error"]
    (False, True, 'record')
    >>> validate_config({"measure": {"smi": "no"}, "segmentaton": {}})
    Traceback (most recent call last):
    ...
    microarch.workflow._config.ConfigError: configuration: 2 problems in the configuration
      (top level): Additional properties are not allowed ('segmentaton' was unexpected)
      measure.smi: 'no' is not of type 'boolean'
    """
    from jsonschema import Draft202012Validator

    if schema is None:
        from microarch.workflow._paths import schema_path

        schema = schema_path("config")
    if isinstance(schema, (str, os.PathLike)):
        schema = _load_yaml(schema)
    config = {} if config is None else dict(config)
    filled = _fill_defaults(config, schema)
    problems = []
    for error in sorted(Draft202012Validator(schema).iter_errors(filled),
                        key=lambda e: [str(p) for p in e.path]):
        where = ".".join(str(p) for p in error.path) or "(top level)"
        problems.append(f"{where}: {error.message}")
    if problems:
        raise ConfigError(source, problems)
    return filled


def load_config(path=None, *, overrides=None, schema=None):
    """Read a workflow configuration file, apply overrides, validate, fill in defaults.

    Parameters
    ----------
    path : path-like, optional
        A ``config.yaml``; default the workflow's own ``config/config.yaml``.
    overrides : mapping, optional
        Top-level keys replacing those of the file (sections are merged one level deep).
    schema : dict or path, optional
        Default ``pipelines/schemas/config.schema.yaml``.

    Returns
    -------
    dict

    Examples
    --------
    >>> from microarch.workflow import load_config
    >>> config = load_config(overrides={"measure": {"smi": False}})
    >>> config["measure"]["smi"], config["segmentation"]["preset"]
    (False, 'xct2')
    """
    if path is None:
        from microarch.workflow._paths import default_config_path

        path = default_config_path()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    config = _load_yaml(path) or {}
    if not isinstance(config, dict):
        found = type(config).__name__
        raise ConfigError(path, [f"expected a mapping of keys to values, got {found}"])
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return validate_config(config, schema=schema, source=str(path))
