"""Map an Import to the repo files it refers to (heuristic, no build-system knowledge).

External and standard-library imports resolve to ``[]``. All paths are repo-relative,
"/"-separated, and only paths present in ``paths`` are ever returned.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from sleepy_repo.parse.facts import Import

log = logging.getLogger(__name__)

__all__ = ["resolve_import"]

_JS_EXTENSIONS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
# a `.js` spec may name the compiled output of a `.ts` file (ESM TypeScript convention)
_JS_SOURCE_FOR = {
    ".js": (".ts", ".tsx", ".js", ".jsx"),
    ".jsx": (".tsx", ".jsx"),
    ".mjs": (".mts", ".mjs"),
    ".cjs": (".cts", ".cjs"),
}
_RUST_CRATE_FILES = ("lib.rs", "main.rs")


@dataclass(frozen=True, slots=True)
class _PathIndex:
    """Lookups derived once per ``paths`` set."""

    files: frozenset[str]
    go_dirs: dict[str, tuple[str, ...]]  # directory -> its non-test .go files


@lru_cache(maxsize=4)
def _index(paths: frozenset[str]) -> _PathIndex:
    go_dirs: dict[str, list[str]] = {}
    for path in paths:
        if path.endswith(".go") and not path.endswith("_test.go"):
            go_dirs.setdefault(posixpath.dirname(path), []).append(path)
    return _PathIndex(paths, {d: tuple(sorted(fs)) for d, fs in go_dirs.items()})


def resolve_import(
    importer: str,
    lang: str,
    imp: Import,
    paths: frozenset[str],
    go_module: str | None = None,
) -> list[str]:
    """Repo files that ``imp`` (found in file ``importer``) refers to; ``[]`` if external.

    ``go_module`` is the module path from go.mod (Go only; without it Go imports resolve
    to nothing).
    """
    resolver = _RESOLVERS.get(lang)
    if resolver is None:
        return []
    try:
        found = resolver(importer, imp, _index(paths), go_module)
    except Exception:  # a heuristic must never break indexing
        log.exception("resolving %r from %s failed", imp.module, importer)
        return []
    return sorted(dict.fromkeys(found))


def _join(*parts: str) -> str:
    path = posixpath.normpath(posixpath.join(*parts)) if parts else ""
    return "" if path == "." else path


def _first(candidates: Iterable[str], files: frozenset[str]) -> str | None:
    for candidate in candidates:
        if candidate in files:
            return candidate
    return None


# --- Python -------------------------------------------------------------------------------


def _py_module_file(base: str, parts: list[str], files: frozenset[str]) -> str | None:
    stem = _join(base, *parts) if parts else base
    if not stem:
        return _first(("__init__.py", "__init__.pyi"), files) if not parts else None
    return _first(
        (stem + ".py", stem + "/__init__.py", stem + ".pyi", stem + "/__init__.pyi"), files
    )


def _py_package_root(importer: str, files: frozenset[str]) -> str:
    """Directory above the importer's top-level package (its own dir for a script)."""
    directory = posixpath.dirname(importer)
    while directory and (
        directory + "/__init__.py" in files or directory + "/__init__.pyi" in files
    ):
        directory = posixpath.dirname(directory)
    return directory


def _py_names(
    base: str,
    parts: list[str],
    module_file: str | None,
    names: tuple[str, ...],
    files: frozenset[str],
) -> list[str]:
    """Submodules among ``names``, plus the module itself when a name is not a submodule."""
    found: list[str] = []
    needs_module = not names
    for name in names:
        sub = _py_module_file(base, [*parts, name], files) if name != "*" else None
        if sub is not None:
            found.append(sub)
        else:
            needs_module = True
    if needs_module and module_file is not None:
        found.append(module_file)
    return found


def _resolve_python(
    importer: str, imp: Import, index: _PathIndex, go_module: str | None
) -> list[str]:
    files = index.files
    spec = imp.module
    if spec.startswith("."):
        dots = len(spec) - len(spec.lstrip("."))
        base = posixpath.dirname(importer)
        for _ in range(dots - 1):
            if not base:
                return []  # beyond the top of the repo
            base = posixpath.dirname(base)
        rest = spec[dots:]
        parts = rest.split(".") if rest else []
        module_file = _py_module_file(base, parts, files) if parts else None
        if not parts:
            module_file = _first((_join(base, "__init__.py"), _join(base, "__init__.pyi")), files)
        return _py_names(base, parts, module_file, imp.names, files)
    parts = spec.split(".")
    roots = dict.fromkeys((_py_package_root(importer, files), "", "src"))
    for root in roots:
        module_file = _py_module_file(root, parts, files)
        if module_file is not None:
            return _py_names(root, parts, module_file, imp.names, files)
    return []


# --- JavaScript / TypeScript --------------------------------------------------------------


def _resolve_js(importer: str, imp: Import, index: _PathIndex, go_module: str | None) -> list[str]:
    spec = imp.module.split("?", 1)[0].split("#", 1)[0]
    if not spec.startswith(("./", "../")) and spec not in (".", ".."):
        return []  # a package, a URL or a path alias
    target = _join(posixpath.dirname(importer), spec)
    if target.startswith("../") or target == "..":
        return []
    files = index.files
    candidates: list[str] = []
    if not (spec.endswith("/") or spec in (".", "..")):  # a directory spec means its index
        candidates.append(target)
        stem, ext = posixpath.splitext(target)
        if ext in _JS_SOURCE_FOR:
            candidates.extend(stem + alt for alt in _JS_SOURCE_FOR[ext])
        candidates.extend(target + e for e in _JS_EXTENSIONS)
    candidates.extend(_join(target, "index" + e) for e in _JS_EXTENSIONS)
    hit = _first(candidates, files)
    return [hit] if hit is not None else []


# --- Go -----------------------------------------------------------------------------------


def _go_module_root(importer: str, files: frozenset[str]) -> str:
    """Directory of the go.mod nearest above the importer ("" if none is listed)."""
    directory = posixpath.dirname(importer)
    while True:
        if _join(directory, "go.mod") in files:
            return directory
        if not directory:
            return ""
        directory = posixpath.dirname(directory)


def _resolve_go(importer: str, imp: Import, index: _PathIndex, go_module: str | None) -> list[str]:
    if not go_module:
        return []
    spec = imp.module
    if spec == go_module:
        rel = ""
    elif spec.startswith(go_module + "/"):
        rel = spec[len(go_module) + 1 :]
    else:
        return []
    directory = _join(_go_module_root(importer, index.files), rel)
    return list(index.go_dirs.get(directory, ()))


# --- Rust ---------------------------------------------------------------------------------


def _rust_crate_src(importer: str, files: frozenset[str]) -> str | None:
    """The directory holding the importer's crate root (lib.rs / main.rs)."""
    directory = posixpath.dirname(importer)
    fallback: str | None = None
    while True:
        if any(_join(directory, f) in files for f in _RUST_CRATE_FILES):
            parent = posixpath.dirname(directory)
            if posixpath.basename(directory) == "src" or _join(parent, "Cargo.toml") in files:
                return directory
            if fallback is None:
                fallback = directory
        if not directory:
            return fallback
        directory = posixpath.dirname(directory)


def _rust_self_module(importer: str, crate_src: str) -> list[str] | None:
    """Module path of the importer inside its crate (``src/a/b.rs`` -> ``[a, b]``)."""
    rel = importer[len(crate_src) + 1 :] if crate_src else importer
    if crate_src and not importer.startswith(crate_src + "/"):
        return None
    parts = rel.split("/")
    stem = parts[-1].removesuffix(".rs")
    if stem == "mod" or (len(parts) == 1 and parts[-1] in _RUST_CRATE_FILES):
        return parts[:-1]
    return [*parts[:-1], stem]


def _rust_module_file(
    crate_src: str, segments: list[str], importer: str, files: frozenset[str]
) -> str | None:
    if not segments:
        own = [_join(crate_src, f) for f in _RUST_CRATE_FILES]
        return _first(sorted(own, key=lambda p: p != importer), files)
    stem = _join(crate_src, *segments)
    return _first((stem + ".rs", stem + "/mod.rs"), files)


def _resolve_rust(
    importer: str, imp: Import, index: _PathIndex, go_module: str | None
) -> list[str]:
    files = index.files
    spec = imp.module
    if spec.startswith("::"):
        return []
    crate_src = _rust_crate_src(importer, files)
    if crate_src is None:
        return []
    self_mod = _rust_self_module(importer, crate_src)
    if self_mod is None:
        return []
    segments = spec.split("::")
    head = segments[0]
    if head == "crate":
        base, rest = [], segments[1:]
    elif head in ("self", "super"):
        base = list(self_mod)
        rest = segments
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                if not base:
                    return []
                base.pop()
            rest = rest[1:]
    else:
        # 2018 paths may name a child of the current module; otherwise it is a crate
        base, rest = list(self_mod), segments
        if _rust_module_file(crate_src, base + rest[:1], importer, files) is None:
            return []

    # the longest prefix of the path that is a module file
    module_file: str | None = None
    module_path = base
    full = False
    for k in range(len(rest), -1, -1):
        module_file = _rust_module_file(crate_src, base + rest[:k], importer, files)
        if module_file is not None:
            module_path = base + rest[:k]
            full = k == len(rest)
            break
    if module_file is None:
        return []
    if not full:
        return [module_file]  # the path ends in items of that module
    found: list[str] = []
    needs_module = not imp.names
    for name in imp.names:
        if name in ("self", "*"):
            needs_module = True
            continue
        sub = _rust_module_file(crate_src, [*module_path, name], importer, files)
        if sub is not None:
            found.append(sub)
        else:
            needs_module = True
    if needs_module:
        found.append(module_file)
    return found


_RESOLVERS: dict[str, Callable[[str, Import, _PathIndex, str | None], list[str]]] = {
    "python": _resolve_python,
    "javascript": _resolve_js,
    "typescript": _resolve_js,
    "tsx": _resolve_js,
    "go": _resolve_go,
    "rust": _resolve_rust,
}
