"""The semantic index: embeddings of every module's units, computed at idle time (``refresh``,
the sleeper, the hook) and fused into the ranking like any other signal (DESIGN §5).

A question's words are often not the code's ("where are environment variables read?" for
``os.environ.get``); BM25 cannot bridge that, an embedding can. Embedding every unit of a
repository takes seconds, which a question cannot spend, so it is sleep-time work: vectors
are stored per module, keyed by the module's blob and the model, so unchanged code is never
embedded again, and a question only embeds itself (well under a millisecond).

Models (``[embed] model``):

* ``auto`` (the default): the small static model that the ``[embed]`` extra installs
  (wordllama's ``l2_supercat_256``, packaged in its wheel), or no semantic index when the
  extra is not installed (``status`` says so; retrieval works without it);
* ``wordllama``: that model, required (a clear error when the extra is missing);
* a directory holding a static embedding model in the Model2Vec layout (``tokenizer.json``
  and ``model.safetensors`` with one 2-D tensor), e.g. a code model downloaded the usual way;
* ``off``: no semantic index.

Vectors are L2-normalised and stored as float16. numpy and the model libraries are imported
only when a model is loaded, so a plain install never imports them.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sleepy_repo.errors import ConfigError
from sleepy_repo.store import NoteStore
from sleepy_repo.units import SymbolSpan, Unit, pieces, units_of

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

log = logging.getLogger(__name__)

PIECE_LINES = 60  # a longer unit is embedded as pieces of at most this many lines
TEXT_CHARS = 2000  # of a piece's code, embedded (a static model averages its tokens)
FILE_TOP = 50  # files ranked by their best unit's similarity, fused as the "embed" list
REFRESH_SECONDS = 60.0  # of embedding per refresh (the rest waits for the next one)
PATHS_SECONDS = 5.0  # when a refresh names its paths (a save in an editor)
INSTALL_HINT = "pip install 'sleepy-repo[embed]'"
WORDLLAMA = "wordllama"
_WORDLLAMA_CONFIG = "l2_supercat"
_WORDLLAMA_DIM = 256


class Embedder:
    """A static embedding model: a token embedding table averaged over a text's tokens."""

    def __init__(self, name: str, table: Any, tokenizer: Any) -> None:
        from wordllama.inference import WordLlamaInference  # type: ignore[import-untyped]

        self.name = name  # the key its vectors are stored under (model and its files)
        self.dim = int(table.shape[1])
        self._model = WordLlamaInference(table, tokenizer)

    def embed(self, texts: list[str]) -> Matrix:
        """One L2-normalised float32 row per text."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = np.asarray(self._model.embed(texts, norm=True), dtype=np.float32)
        return np.nan_to_num(vecs)  # a text of no known token averages to 0/0


@dataclass(frozen=True)
class Status:
    """What ``status`` shows of the semantic index's model: its name, or why there is none."""

    model: str | None
    reason: str | None = None
    error: bool = False  # a configured model cannot load (not: off, or the extra missing)


def for_config(spec: str) -> Embedder | None:
    """The embedder ``[embed] model`` names (see the module docstring); None for ``off``, and
    for ``auto`` when the ``[embed]`` extra is not installed. A named model that cannot be
    loaded raises ``ConfigError`` with what to do."""
    return _load(spec.strip())


def status(spec: str) -> Status:
    """The model ``spec`` gives, or why there is none (never raises). Its files are found
    and named, not loaded: ``status`` and ``notes`` stay as fast as without the index."""
    spec = spec.strip()
    if spec in ("off", ""):
        return Status(None, 'off ([embed] model = "off")')
    try:
        if spec in ("auto", WORDLLAMA):
            files = _wordllama_files()
            if files is None:
                if spec == WORDLLAMA:
                    raise ConfigError(
                        f"[embed] model = {spec!r} needs the [embed] extra: {INSTALL_HINT}"
                    )
                return Status(None, f"off: the [embed] extra is not installed ({INSTALL_HINT})")
            return Status(files[2])
        return Status(_model2vec_files(Path(spec).expanduser())[2])
    except ConfigError as exc:
        return Status(None, str(exc), error=True)


@lru_cache(maxsize=4)
def _load(spec: str) -> Embedder | None:
    if spec in ("off", ""):
        return None
    if spec in ("auto", WORDLLAMA):
        try:
            return _wordllama()
        except ImportError:
            if spec == "auto":
                log.info("no semantic index: the [embed] extra is not installed")
                return None
            raise ConfigError(
                f"[embed] model = {spec!r} needs the [embed] extra: {INSTALL_HINT}"
            ) from None
    return _model2vec_dir(Path(spec).expanduser())


def _wordllama_files() -> tuple[Path, Path, str] | None:
    """The weights, tokenizer and name of the model wordllama's wheel ships, found without
    importing anything (None: the extra is not installed)."""
    import importlib.metadata
    import importlib.util

    try:
        found = importlib.util.find_spec("wordllama")
        if (
            found is None
            or not found.submodule_search_locations
            or any(
                importlib.util.find_spec(m) is None for m in ("numpy", "safetensors", "tokenizers")
            )
        ):
            return None
    except (ImportError, ValueError):  # a module blocked in sys.modules (None)
        return None
    pkg = Path(next(iter(found.submodule_search_locations)))
    # the files its wheel ships (its own loader looks for the tokenizer elsewhere and then
    # downloads it; nothing here goes to the network)
    weights = pkg / "weights" / f"{_WORDLLAMA_CONFIG}_{_WORDLLAMA_DIM}.safetensors"
    tokens = pkg / "tokenizers" / f"{_WORDLLAMA_CONFIG}_tokenizer_config.json"
    if not weights.is_file() or not tokens.is_file():
        raise ConfigError(
            f"the installed wordllama has no bundled {_WORDLLAMA_CONFIG} model at {pkg}: "
            f"reinstall it ({INSTALL_HINT})"
        )
    version = importlib.metadata.version("wordllama")
    return weights, tokens, f"wordllama-{_WORDLLAMA_CONFIG}-{_WORDLLAMA_DIM}@{version}"


def _wordllama() -> Embedder:
    files = _wordllama_files()
    if files is None:
        raise ImportError("wordllama")
    weights, tokens, name = files
    from safetensors import safe_open
    from tokenizers import Tokenizer

    with safe_open(str(weights), framework="np") as f:
        table = f.get_tensor("embedding.weight")
    return Embedder(name, table, Tokenizer.from_file(str(tokens)))


@lru_cache(maxsize=8)
def _digest(weights: Path, size: int, mtime_ns: int) -> str:
    """The first 12 hex digits of the file's sha256 (cached while its size and time stay)."""
    h = hashlib.sha256()
    with weights.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _model2vec_files(path: Path) -> tuple[Path, Path, str]:
    """The tokenizer, weights and name (directory @ weights digest) of a Model2Vec-layout
    model directory."""
    tokens, weights = path / "tokenizer.json", path / "model.safetensors"
    if not path.is_dir() or not tokens.is_file() or not weights.is_file():
        raise ConfigError(
            f"[embed] model = {str(path)!r}: not a static embedding model directory "
            "(it needs tokenizer.json and model.safetensors, as Model2Vec models ship); "
            'use "auto", "wordllama" or "off", or point it at such a directory'
        )
    st = weights.stat()
    return tokens, weights, f"{path.name}@{_digest(weights, st.st_size, st.st_mtime_ns)}"


def _model2vec_dir(path: Path) -> Embedder:
    """A static model in the Model2Vec layout: ``tokenizer.json`` + ``model.safetensors``."""
    tokens, weights, name = _model2vec_files(path)
    try:
        from safetensors import safe_open
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(f"[embed] model needs the [embed] extra: {INSTALL_HINT}") from None
    try:
        with safe_open(str(weights), framework="np") as f:
            keys = list(f.keys())
            if len(keys) != 1:
                raise ConfigError(
                    f"{weights}: expected one embedding table, found {len(keys)} tensors"
                )
            table = f.get_tensor(keys[0])
        tokenizer = Tokenizer.from_file(str(tokens))
    except ConfigError:
        raise
    except Exception as exc:  # a damaged download: say which file
        raise ConfigError(f"[embed] model {path}: cannot load it: {exc}") from None
    if table.ndim != 2:
        raise ConfigError(f"{weights}: the embedding table must be 2-D, got {table.shape}")
    return Embedder(name, table, tokenizer)


# -- idle time: the vectors of every module -----------------------------------------------
def unit_texts(
    path: str, symbols: list[SymbolSpan], lines: list[str]
) -> tuple[list[Unit], list[str]]:
    """The pieces of a module's units (at most ``PIECE_LINES`` lines each) and the text each
    is embedded as: its path and symbol, then its code."""
    us = [p for u in units_of(path, symbols, lines) for p in pieces(u, PIECE_LINES)]
    texts = [
        f"{path} {u.symbol or ''}\n" + "\n".join(lines[u.start_line - 1 : u.end_line])[:TEXT_CHARS]
        for u in us
    ]
    return us, texts


@dataclass
class Update:
    modules: int = 0  # embedded now
    units: int = 0
    seconds: float = 0.0
    left: int = 0  # modules still to embed when the time ran out


def update_embeddings(
    store: NoteStore,
    embedder: Embedder,
    paths: Iterable[str] | None = None,
    *,
    seconds: float = REFRESH_SECONDS,
) -> Update:
    """Embed the units of every indexed module (or of ``paths``) whose current blob has no
    vectors for this model yet, for at most ``seconds``; vectors of modules no longer
    indexed are dropped."""
    import numpy as np

    only = set(paths) if paths is not None else None
    out = Update()
    with store.read() as conn:
        todo = [
            (p, b)
            for p, b in store.modules_without_embeddings(conn, embedder.name)
            if only is None or p in only
        ]
    started = time.monotonic()
    for k, (path, blob) in enumerate(todo):
        if time.monotonic() - started > seconds:
            out.left = len(todo) - k
            break
        t0 = time.monotonic()
        with store.read() as conn:
            lines = store.module_lines(conn, path)
            symbols = store.symbol_spans(conn, path)
        units, texts = unit_texts(path, symbols, lines)
        vecs = embedder.embed(texts).astype(np.float16)
        spans = json.dumps([[u.start_line, u.end_line] for u in units])
        with store.write() as conn:
            store.put_embeddings(
                conn, path, blob, embedder.name, spans, vecs.tobytes(), time.monotonic() - t0
            )
        out.modules += 1
        out.units += len(units)
    out.seconds = time.monotonic() - started
    with store.write() as conn:
        store.drop_stale_embeddings(conn)
    return out


# -- question time ------------------------------------------------------------------------
@dataclass(frozen=True)
class Index:
    """Every current module's unit vectors, as one matrix (modules in path order, and rows
    in line order within a module: a module's pieces never overlap)."""

    paths: list[str]  # the modules, in row order
    first_rows: list[int]  # per module: its first row (rows [first_rows[k], first_rows[k+1]))
    starts: list[int]  # per row: its span's first and last line
    ends: list[int]
    matrix: Matrix
    by_path: dict[str, tuple[int, int]]  # path -> its rows [a, b)

    def similarities(self, query: Matrix) -> Matrix:
        return self.matrix @ query

    def files(self, sims: Matrix, top: int = FILE_TOP) -> list[str]:
        """Files by their best unit's similarity, best first."""
        import numpy as np

        best = np.maximum.reduceat(sims, np.asarray(self.first_rows))
        # best first, ties by path: a stable sort of modules kept in path order
        order = np.argsort(-best, kind="stable")[:top]
        return [self.paths[k] for k in order]

    def unit_similarity(self, sims: Matrix, unit: Unit) -> float:
        """The best similarity of the embedded pieces overlapping ``unit`` (-1: none)."""
        a, b = self.by_path.get(unit.path, (0, 0))
        # the first row ending at or after the unit's start, then rows until one starts after
        # its end (a module's rows are sorted and disjoint)
        row = bisect.bisect_left(self.ends, unit.start_line, a, b)
        best = -1.0
        while row < b and self.starts[row] <= unit.end_line:
            best = max(best, float(sims[row]))
            row += 1
        return best


_CACHE: dict[tuple[str, str], tuple[tuple[Any, ...], Index]] = {}


def index(conn: sqlite3.Connection, model: str) -> Index | None:
    """The store's semantic index for ``model`` (None when it holds no vectors), cached per
    store file until the vectors or the modules change."""
    import numpy as np

    db = NoteStore.database_file(conn)
    signature = NoteStore.generation(conn, "modules", "embeddings")
    cached = _CACHE.get((db, model))
    if cached is not None and cached[0] == signature:
        return cached[1]
    paths: list[str] = []
    first_rows: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    blocks: list[Matrix] = []
    by_path: dict[str, tuple[int, int]] = {}
    for path, spans_json, blob in NoteStore.current_embeddings(conn, model):
        rows = [(int(s), int(e)) for s, e in json.loads(spans_json)]
        if not rows:
            continue
        m = np.frombuffer(blob, dtype=np.float16).reshape(len(rows), -1).astype(np.float32)
        by_path[path] = (len(starts), len(starts) + len(rows))
        paths.append(path)
        first_rows.append(len(starts))
        starts.extend(s for s, _ in rows)
        ends.extend(e for _, e in rows)
        blocks.append(m)
    if not blocks:
        return None
    idx = Index(paths, first_rows, starts, ends, np.concatenate(blocks), by_path)
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[(db, model)] = (signature, idx)
    return idx
