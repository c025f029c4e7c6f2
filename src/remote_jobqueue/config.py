"""Dask configuration of remote-jobqueue: defaults from `remote-jobqueue.yaml`, as Dask expects,
and what each key means and allows from `remote-jobqueue-schema.yaml` (a JSON schema in YAML,
as distributed's `distributed-schema.yaml`).

Values come, in order of precedence, from keyword arguments, then Dask config (YAML files in
`~/.config/dask`, `DASK_CONFIG`, `DASK_REMOTE_JOBQUEUE__*` environment variables), then the
defaults shipped with the package. `settings()` merges them and checks the result against the
schema; `check()` checks some settings alone (the spawner's, the site catalogue).
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml

from .errors import InvalidSettings

NAMESPACE = "remote-jobqueue"
_DEFAULTS_FILE = Path(__file__).with_name("remote-jobqueue.yaml")
SCHEMA_FILE = Path(__file__).with_name("remote-jobqueue-schema.yaml")

with _DEFAULTS_FILE.open() as _f:
    defaults = yaml.safe_load(_f)
with SCHEMA_FILE.open() as _f:
    schema = yaml.safe_load(_f)

dask.config.update_defaults(defaults)


def _name_configured_pool() -> None:
    """`remote-jobqueue configure`'s HTCondor client configuration, if nothing else names one:
    the bindings read ``CONDOR_CONFIG`` once, when first imported, so this runs with the
    package's first import (and changes nothing where ``CONDOR_CONFIG`` is set, as in jobs)."""
    from .configure import apply_defaults

    apply_defaults()


_name_configured_pool()


def get(key: str, override: Any = None) -> Any:
    """``override`` if given, else ``remote-jobqueue.<key>`` from Dask config."""
    if override is not None:
        return override
    return dask.config.get(f"{NAMESPACE}.{key}")


# The schema ---------------------------------------------------------------------------------


def schema_of(key: str) -> dict[str, Any]:
    """The schema of the setting ``remote-jobqueue.<key>`` (hyphenated key)."""
    return schema["properties"][NAMESPACE]["properties"][key]


def describe(key: str) -> str:
    """What the setting ``remote-jobqueue.<key>`` is, as its schema describes it (one line)."""
    return " ".join(schema_of(key).get("description", "").split())


def setting_keys() -> list[str]:
    """Every key of the `remote-jobqueue` settings, as the schema lists them."""
    return list(schema["properties"][NAMESPACE]["properties"])


def site_keys() -> list[str]:
    """Every key a site of the catalogue (`remote-jobqueue.sites.<name>`) may have."""
    return list(schema_of("sites")["additionalProperties"]["properties"])


# Checking -----------------------------------------------------------------------------------


def settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every `remote-jobqueue` setting in effect, checked against the schema.

    ``overrides`` (keyword arguments, ``cores=2`` or ``{"gateway-host-key": ...}``; underscores
    and hyphens alike) win over Dask config where they are not None. Returns a new dict with
    every key of the schema, hyphenated as in Dask config; raises `InvalidSettings` naming each
    refused key, its value and what is allowed.
    """
    given = _normalized({k: v for k, v in (overrides or {}).items() if v is not None})
    values = {**_normalized(dask.config.get(NAMESPACE) or {}), **given}
    return copy.deepcopy(check(values))


def check(values: Mapping[str, Any]) -> dict[str, Any]:
    """Some `remote-jobqueue` settings (keys as in `remote-jobqueue.<key>`), checked alone.

    Returns them normalized (keys hyphenated, paths and tuples as strings and lists) or raises
    `InvalidSettings`. Keys that are missing are not missing values: nothing is required.
    """
    values = _normalized(values)
    errors = _validator().iter_errors({NAMESPACE: values})
    problems = [p for e in sorted(errors, key=_where) for p in _explain(e)]
    if problems:
        raise InvalidSettings(problems)
    return values


def site_catalogue() -> dict[str, dict[str, Any]]:
    """`remote-jobqueue.sites` from Dask config, checked: site name -> its keys (hyphenated)."""
    sites = check({"sites": dask.config.get(f"{NAMESPACE}.sites") or {}})["sites"]
    return {name: dict(entry or {}) for name, entry in sites.items()}


def _hyphenated(values: Mapping[str, Any], known: list[str]) -> dict[str, Any]:
    # Dask treats "_" and "-" in keys alike; so do we, for the keys the schema fixes.
    out = {}
    for key, value in values.items():
        hyphenated = key.replace("_", "-")
        out[hyphenated if hyphenated in known else key] = value
    return out


def _normalized(values: Mapping[str, Any]) -> dict[str, Any]:
    out = _hyphenated(values, setting_keys())
    for key, value in out.items():
        if isinstance(value, os.PathLike):
            out[key] = os.fspath(value)
        elif isinstance(value, tuple):
            out[key] = list(value)
    if isinstance(out.get("sites"), Mapping):
        out["sites"] = {
            name: _hyphenated(entry, site_keys()) if isinstance(entry, Mapping) else entry
            for name, entry in out["sites"].items()
        }
    return out


_built: tuple[Any, Any] = (None, None)  # (schema, its validator)


def _validator() -> Any:
    # Built once per schema: every cluster, site lookup and spawner setting is checked with it.
    global _built
    if _built[0] is not schema:
        _built = (schema, _build_validator())
    return _built[1]


def _build_validator() -> Any:
    # jsonschema is imported on first use: importing it can take a second.
    import jsonschema
    from dask.utils import parse_bytes

    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("bytes", raises=ValueError)
    def _bytes(value: object) -> bool:
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty")
        if isinstance(value, str) and parse_bytes(value) < 1:
            raise ValueError("less than one byte")
        return True

    return jsonschema.validators.validator_for(schema)(schema, format_checker=checker)


# Readable errors ----------------------------------------------------------------------------

_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def _explain(error: Any) -> list[str]:
    """One line per refused key of a jsonschema error: the key, its value, what is allowed."""
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        return [_unknown(key, path, known) for key in error.instance if key not in known]
    return [f"{'.'.join(path)} = {error.instance!r} is refused: {_allowed(error)}"]


def _unknown(key: str, path: list[str], known: list[str]) -> str:
    where = ".".join(path)
    if len(path) == 1:
        what, kind = f"unknown setting {key!r} ({where}.{key})", "settings"
    elif len(path) == 3 and path[1] == "sites":
        what, kind = f"unknown key {key!r} in site {path[2]!r} ({where})", "keys"
    else:
        what, kind = f"unknown key {key!r} in {where}", "keys"
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{what}; known {kind}: {', '.join(known)}{hint}"


def _allowed(error: Any) -> str:
    rule, bound = error.validator, error.validator_value
    if rule == "type":
        types = [bound] if isinstance(bound, str) else bound
        return "must be " + " or ".join(_TYPES.get(t, t) for t in types)
    if rule == "format" and bound == "bytes":
        cause = f" ({error.cause})" if error.cause else ""
        return f"must be a size: a number of bytes, or a string such as '2 GiB'{cause}"
    words = {
        "minimum": "must be at least",
        "exclusiveMinimum": "must be greater than",
        "maximum": "must be at most",
        "exclusiveMaximum": "must be less than",
        "enum": "must be one of",
    }
    if rule in words:
        return f"{words[rule]} {bound}"
    if rule == "minLength" and bound == 1:
        return "must not be empty"
    return error.message
