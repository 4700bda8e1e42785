"""Typed configuration: one source for every default, loaded from YAML with ``key=value`` overrides.

    cfg = load_config(TrainConfig, "tiny_cpu.yaml", ["loss.alpha=0.5", "train.max_steps=20"])

Models are pydantic classes with ``extra="forbid"``; YAML is parsed with PyYAML; an override's value
is parsed as YAML too (``lr=1e-6`` is a float, ``paths=[a.jsonl, b.jsonl]`` a list). Errors say which
key is wrong and why; an unknown key gets the closest valid keys suggested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from alphapo.errors import ConfigError, suggest

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; a clear error for a missing file or invalid YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (shipped recipes: `alphapo recipes ls`)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def parse_value(raw: str) -> Any:
    """An override's value: int or float when it reads as one (``1e-4`` too, which YAML 1.1 would
    keep as a string), otherwise parsed as YAML (lists, booleans, null), otherwise the string."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries into a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. loss.alpha=0.5)")
        key, raw = item.split("=", 1)
        value = parse_value(raw)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value ({child!r}), not a section")
            node = child
        node[parts[-1]] = value
    return data


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at ``loc`` (a pydantic error location) inside ``model``."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        for arg in getattr(annotation, "__args__", ()) or (annotation,):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                annotation = arg
                break
        current = annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            hint = suggest(str(loc[-1]), valid) or (f" (valid keys: {', '.join(valid)})" if valid else "")
            lines.append(f"unknown key {key!r}{hint}")
        elif e["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            got = e.get("input")
            lines.append(f"{key}: {e['msg']} (got {got!r})" if not isinstance(got, dict) else f"{key}: {e['msg']}")
    return f"{source}: invalid config:\n  " + "\n  ".join(lines)


def validate(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model, source)) from None


def load_config(model: type[M], path: str | Path | None, overrides: list[str] | None = None) -> M:
    """Read ``path`` (a file, or the name of a shipped recipe: ``alphapo.recipes``; or start empty),
    apply ``overrides``, validate as ``model``."""
    from alphapo.recipes import resolve

    path = resolve(path) if path is not None else None
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    translate = getattr(model, "translate_settings", None)  # e.g. TRL's names in a training recipe
    if translate is None:
        return validate(model, apply_overrides(data, overrides or []), source)
    # Foreign names are translated in the recipe and in the overrides separately, so that an
    # override (``learning_rate=1e-5``) replaces the recipe's value (``optim.lr``) as ``optim.lr=1e-5`` would.
    data = translate(data, source)
    dotted = [o for o in overrides or [] if "." in o.split("=", 1)[0] or "=" not in o]
    top = translate(apply_overrides({}, [o for o in overrides or [] if o not in dotted]), "overrides")
    data = apply_overrides(data, dotted)
    given = {o.split("=", 1)[0].strip() for o in dotted}
    for key, value in flatten(top).items():
        if key in given:
            raise ConfigError(f"overrides: {key} is given twice (once by another name)")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate(model, data, source)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys: ``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    from alphapo.files import write_text

    write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
