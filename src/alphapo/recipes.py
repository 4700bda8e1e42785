"""The recipes shipped with alphapo (package data), listed and copied as ``tune ls`` / ``tune cp`` do.

    alphapo recipes ls                         # every recipe: name, kind, what it is for
    alphapo recipes cp tiny_cpu .              # copy one to edit (tiny_cpu.yaml here)
    alphapo recipes path accelerate/ddp        # where the installed file is (for accelerate --config_file)

``alphapo train NAME.yaml`` (and ``alphapo run``/``sweep``) also take a shipped recipe's name when no
such file exists in the working directory.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from alphapo.errors import ConfigError, suggest


def recipes_dir() -> Path:
    return Path(str(resources.files("alphapo") / "configs"))


def list_recipes() -> dict[str, Path]:
    """Shipped recipe names (``tiny_cpu``, ``accelerate/ddp``, ...) and their installed paths."""
    root = recipes_dir()
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def describe(path: Path) -> tuple[str, str]:
    """(kind, first comment line) of a recipe file."""
    text = path.read_text()
    kind = "accelerate" if path.parent.name == "accelerate" else "pipeline" if "kind: pipeline" in text else "train"
    if kind == "train" and "task: reward" in text:
        kind = "reward"
    first = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    return kind, first


def recipe_path(name: str) -> Path:
    """The installed file of shipped recipe ``name`` (with or without ``.yaml``)."""
    known = list_recipes()
    key = name.removesuffix(".yaml")
    if key not in known:
        raise ConfigError(f"no shipped recipe {name!r}{suggest(key, known)}; `alphapo recipes ls` lists them")
    return known[key]


def resolve(path: str | Path) -> Path:
    """``path`` if it exists, else the shipped recipe of that name, else ``path`` (its error comes later)."""
    path = Path(path)
    if path.exists():
        return path
    key = str(path).removesuffix(".yaml")
    return list_recipes().get(key, path)


def copy_recipe(name: str, dest: str | Path = ".", force: bool = False) -> Path:
    """Copy shipped recipe ``name`` to ``dest`` (a folder, or a file name); never overwrites unless ``force``."""
    source = recipe_path(name)
    dest = Path(dest)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
