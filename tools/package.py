"""Build the deployment package of a stage, with the dependency layer trimmed.

Chalice's automatic layer holds everything ``requirements.txt`` installs: 61 MB
zipped, over Lambda's 50 MB limit for a zip uploaded directly (``chalice deploy``
uploads it directly). Most of the excess is botocore's service models (16 MB
zipped) for the 400 services Turnout never calls; the rest is code no handler
imports (onnxruntime's model tools, numpy's tests, headers and f2py).

Chalice names its cached layer after its inputs (``requirements.txt`` and
``vendor/``) and reuses a cached zip that exists, so trimming that zip in place
makes every later ``chalice deploy`` and ``chalice package`` ship the trimmed
layer::

    python -m tools.package --stage prod [--out build/package/prod]
    chalice deploy --stage prod         # or terraform apply in --out

``make package STAGE=prod`` and ``make deploy STAGE=prod`` run exactly this.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE_PACKAGES = "python/lib/python3.12/site-packages/"
# Paths (relative to site-packages) that no handler imports. botocore keeps its
# shared tables (endpoints, partitions, retry and default configuration) and the
# one service model Turnout calls.
UNUSED = re.compile(
    r"""^(
        botocore/data/(?!s3/)[^/]+/.*           # other services' models
      | onnxruntime/(transformers|quantization|tools|datasets)/.*
      | numpy/(f2py|testing|_pyinstaller|typing/tests)/.*
      | numpy/.*/tests/.*
      | numpy/_core/(include|lib)/.*             # C headers and static libraries
      | .*\.pyi
    )$""",
    re.VERBOSE,
)
LAYER_PREFIX = "managed-layer-"


def is_unused(path: str) -> bool:
    """True if ``path`` (a name in the layer zip) is left out of the layer."""
    return path.startswith(SITE_PACKAGES) and bool(
        UNUSED.match(path[len(SITE_PACKAGES) :])
    )


def trim_layer(layer_zip: Path) -> tuple[int, int]:
    """Rewrite ``layer_zip`` without its unused files; returns (bytes before,
    bytes after), zipped. Trimming a trimmed layer changes nothing."""
    before = layer_zip.stat().st_size
    trimmed = layer_zip.with_suffix(".trimming")
    with (
        zipfile.ZipFile(layer_zip) as source,
        zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out,
    ):
        for entry in source.infolist():
            if not is_unused(entry.filename):
                out.writestr(entry, source.read(entry), compresslevel=9)
    trimmed.replace(layer_zip)
    return before, layer_zip.stat().st_size


def chalice(*arguments: str, stage: str) -> None:
    """Run the venv's chalice in the project, failing loudly."""
    executable = Path(sys.executable).with_name("chalice")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    subprocess.run(
        [str(executable), "package", *arguments, "--stage", stage],
        cwd=ROOT,
        env=environment,
        check=True,
    )


def build_package(stage: str, out: Path) -> Path:
    """``chalice package --pkg-format terraform`` for ``stage`` into ``out``, with
    the cached layer trimmed first; returns ``out``."""
    with tempfile.TemporaryDirectory() as scratch:
        # The first run builds (or finds) the cached layer; its output is dropped.
        chalice("--pkg-format", "terraform", scratch, stage=stage)
    for layer in (ROOT / ".chalice" / "deployments").glob(LAYER_PREFIX + "*.zip"):
        before, after = trim_layer(layer)
        if before != after:
            print(
                f"trimmed {layer.name}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB"
            )
    chalice("--pkg-format", "terraform", str(out), stage=stage)
    return out


def _make_read_only(tree: Path) -> None:
    for path in tree.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    tree.chmod(0o555)


def unpack(out: Path, into: Path) -> tuple[Path, Path]:
    """Unzip a built package as Lambda does: the app into ``into/task`` (Lambda's
    /var/task), the layer into ``into/opt`` (/opt); both read-only, so that no
    ``__pycache__`` can be written. Returns (task, opt)."""
    task, opt = into / "task", into / "opt"
    for archive, folder in (("deployment.zip", task), ("layer-deployment.zip", opt)):
        with zipfile.ZipFile(out / archive) as package:
            package.extractall(folder)
        _make_read_only(folder)
    return task, opt


def lambda_python(task: Path, opt: Path) -> tuple[list[str], dict[str, str]]:
    """The interpreter command and the Python variables of a Lambda function
    whose code is in ``task`` and layer in ``opt``: a bare Python 3.12 (no
    site-packages, no user site, no script folder on the path) seeing only those
    folders, on Lambda's ``PYTHONPATH``; append a script and its arguments."""
    interpreter = getattr(sys, "_base_executable", sys.executable)
    path = [task, opt / "python/lib/python3.12/site-packages", opt / "python"]
    return [interpreter, "-S", "-s", "-P"], {
        "PYTHONPATH": os.pathsep.join(map(str, path)),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    build_package(options.stage, options.out or ROOT / "build/package" / options.stage)


if __name__ == "__main__":
    main()
