"""Build the deployment package of a stage: the dependency layer trimmed, the
layer and the app shipped with their bytecode.

Chalice's automatic layer holds everything ``requirements.txt`` installs: 61 MB
zipped, over Lambda's 50 MB limit for a zip uploaded directly (``chalice deploy``
uploads it directly). Most of the excess is botocore's service models (16 MB
zipped) for the 400 services Turnout never calls; the rest is code no handler
imports (onnxruntime's model tools and their dependencies, numpy's tests,
headers and f2py). Lambda unzips the code read-only, so Python compiles every
module it imports again at each cold start (over a second for boto3, numpy and
onnxruntime): shipping the bytecode saves that.

Chalice names its cached zips after their inputs (``requirements.txt`` and
``vendor/`` for the layer, the sources for the app) and reuses a cached zip that
exists, so finishing those zips in place makes every later ``chalice deploy``
and ``chalice package`` ship them::

    python -m tools.package --stage prod [--out build/package/prod]
    chalice deploy --stage prod         # or terraform apply in --out

The Terraform configuration also gives each function the ``/tmp`` its
``TURNOUT_EPHEMERAL_STORAGE_MB`` names (``size_ephemeral_storage``), which
Chalice's own configuration cannot say.

``make package STAGE=prod`` and ``make deploy STAGE=prod`` run exactly this.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import py_compile
import re
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SITE_PACKAGES = "python/lib/python3.12/site-packages/"
# Paths (relative to site-packages) that no handler imports. botocore keeps its
# shared tables (endpoints, partitions, retry and default configuration) and the
# two service models Turnout calls (S3, and SQS for the batch fan-out).
UNUSED = re.compile(
    r"""^(
        botocore/data/(?!s3/|sqs/|cloudwatch/)[^/]+/.*  # other services' models
      | onnxruntime/(transformers|quantization|tools|datasets)/.*
      | onnxruntime/capi/libonnxruntime\.so[.0-9]*  # the C API library: the
                                                 # Python module links none of it
      | (google|flatbuffers|packaging)/.*        # needed by those tools alone
      | numpy/(f2py|testing|_pyinstaller|typing/tests)/.*
      | numpy/.*/tests/.*
      | numpy/_core/(include|lib)/.*             # C headers and static libraries
      | .*\.pyi
    )$""",
    re.VERBOSE,
)
TASK = "/var/task/"
# Written into a finished layer: the rules it was trimmed by. A cached layer
# trimmed by other rules (a service model since needed) is built again.
TRIM_STAMP = "python/turnout-trim.txt"
TRIM_RULES = hashlib.sha256(UNUSED.pattern.encode()).hexdigest()[:16]


def is_unused(path: str) -> bool:
    """True if ``path`` (a name in the layer zip) is left out of the layer."""
    return path.startswith(SITE_PACKAGES) and bool(
        UNUSED.match(path[len(SITE_PACKAGES) :])
    )


def compiled(source: bytes, display_path: str, scratch: Path) -> bytes:
    """The bytecode CPython would cache for ``source``: an unchecked-hash pyc, so
    that the read-only copy Lambda unzips is used as it is, whatever the files'
    times."""
    source_file, pyc_file = scratch / "module.py", scratch / "module.pyc"
    source_file.write_bytes(source)
    py_compile.compile(
        str(source_file),
        cfile=str(pyc_file),
        dfile=display_path,
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return pyc_file.read_bytes()


def pyc_name(path: str) -> str:
    folder, _, filename = path.rpartition("/")
    cached = f"__pycache__/{filename[:-3]}.{sys.implementation.cache_tag}.pyc"
    return f"{folder}/{cached}" if folder else cached


def trimmed_by_other_rules(archive: Path) -> bool:
    """Whether a cached layer was finished under trimming rules other than
    UNUSED's now: it lacks files that are now kept, so it must be built again."""
    with zipfile.ZipFile(archive) as layer:
        names = set(layer.namelist())
        if any(is_unused(name) for name in names):
            return False  # as Chalice built it: finish_zip trims it
        stamp = layer.read(TRIM_STAMP).decode() if TRIM_STAMP in names else ""
    return stamp != TRIM_RULES


def finish_zip(archive: Path, mount: str) -> tuple[int, int]:
    """Rewrite ``archive`` (unzipped by Lambda under ``mount``) without the unused
    files, with bytecode next to every module: on Lambda the code is read-only,
    so a module shipped without it is compiled again at every cold start. A
    layer (under /opt/) records the trimming rules in TRIM_STAMP. Returns the
    zip's (bytes before, bytes after); a finished zip stays as it is.
    """
    if sys.version_info[:2] != (3, 12):
        raise RuntimeError("compile the package's bytecode with Python 3.12")
    before = archive.stat().st_size
    with zipfile.ZipFile(archive) as source:
        names = set(source.namelist())
    if not any(
        is_unused(name) or (name.endswith(".py") and pyc_name(name) not in names)
        for name in names
    ):
        return before, before
    rewritten = archive.with_suffix(".finishing")
    with (
        zipfile.ZipFile(archive) as source,
        zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out,
        tempfile.TemporaryDirectory() as scratch,
    ):
        for entry in source.infolist():
            if is_unused(entry.filename):
                continue
            data = source.read(entry)
            out.writestr(entry, data, compresslevel=9)
            cached = pyc_name(entry.filename)
            if entry.filename.endswith(".py") and cached not in names:
                pyc = compiled(data, mount + entry.filename, Path(scratch))
                info = zipfile.ZipInfo(cached, entry.date_time)
                info.external_attr = entry.external_attr
                out.writestr(info, pyc, zipfile.ZIP_DEFLATED, compresslevel=9)
        if mount == "/opt/":
            out.writestr(TRIM_STAMP, TRIM_RULES)
    rewritten.replace(archive)
    return before, archive.stat().st_size


# --- The shutdown extension (helper "feedback"): an external extension in the
# layer, so that Lambda sends the runtime SIGTERM at shutdown and the buffered
# evidence is written (chalicelib.extension).
SHUTDOWN_EXTENSION = ROOT / "tools" / "extensions" / "turnout-shutdown"
SHUTDOWN_ENTRY = "extensions/turnout-shutdown"


def add_shutdown_extension(archive: Path) -> bool:
    """Put SHUTDOWN_EXTENSION into the layer ``archive`` as an executable
    ``extensions/turnout-shutdown`` (Lambda runs /opt/extensions/*); False when
    it is there already, as it is."""
    script = SHUTDOWN_EXTENSION.read_bytes()
    with zipfile.ZipFile(archive) as layer:
        if SHUTDOWN_ENTRY in layer.namelist() and layer.read(SHUTDOWN_ENTRY) == script:
            return False
    rewritten = archive.with_suffix(".extending")
    with (
        zipfile.ZipFile(archive) as source,
        zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out,
    ):
        for entry in source.infolist():
            if entry.filename != SHUTDOWN_ENTRY:
                out.writestr(entry, source.read(entry), compresslevel=9)
        info = zipfile.ZipInfo(SHUTDOWN_ENTRY, (2026, 1, 1, 0, 0, 0))
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        out.writestr(info, script, zipfile.ZIP_DEFLATED, compresslevel=9)
    rewritten.replace(archive)
    return True


# --- end of the shutdown extension


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
    """``chalice package --pkg-format terraform`` for ``stage`` into ``out``, the
    cached layer and app zips finished first (``finish_zip``); returns ``out``."""
    deployments = ROOT / ".chalice" / "deployments"
    for archive in deployments.glob("managed-layer-*.zip"):
        if trimmed_by_other_rules(archive):
            archive.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        # The first run builds (or finds) the cached layer; its output is dropped.
        chalice("--pkg-format", "terraform", scratch, stage=stage)
    for pattern, mount in (("managed-layer-*.zip", "/opt/"), ("appcode-*.zip", TASK)):
        for archive in deployments.glob(pattern):
            before, after = finish_zip(archive, mount)
            if before != after:
                change = f"{before / 1e6:.1f} MB -> {after / 1e6:.1f} MB"
                print(f"finished {archive.name}: {change}")
    for archive in deployments.glob("managed-layer-*.zip"):
        if add_shutdown_extension(archive):
            print(f"added {SHUTDOWN_ENTRY} to {archive.name}")
    chalice("--pkg-format", "terraform", str(out), stage=stage)
    template_path = out / "chalice.tf.json"
    template = json.loads(template_path.read_text())
    size_ephemeral_storage(template)
    template_path.write_text(json.dumps(template, indent=2) + "\n")
    return out


def size_ephemeral_storage(template: dict[str, Any]) -> None:
    """Give each function of a Terraform ``template`` the ``/tmp`` its
    ``TURNOUT_EPHEMERAL_STORAGE_MB`` says (Lambda's default 512 MB without it):
    Chalice 1.34 has no setting for a function's ephemeral storage."""
    functions = template.get("resource", {}).get("aws_lambda_function", {})
    for function in functions.values():
        variables = function.get("environment", {}).get("variables", {})
        size = variables.get("TURNOUT_EPHEMERAL_STORAGE_MB")
        if size:
            function["ephemeral_storage"] = {"size": int(size)}


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
