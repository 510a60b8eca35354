"""``sleepy-repo lsp``: the language server (pygls), over stdio or TCP.

Features (each a thin adapter over ``sleepy_repo.api``):

* ``textDocument/hover``: the notes of the symbol under the cursor, or the module summary
  and top Q&A on the module's header (first line, imports). Citations are ``path:line``
  links, stale and model-written text is marked. A hover that serves notes is logged as
  a query hit.
* ``textDocument/codeLens``: note state and counts on line 1 and on each class; the lens
  runs ``sleepy.notes``.
* ``workspace/executeCommand``: ``sleepy.ask``, ``sleepy.refresh`` (``$/progress``),
  ``sleepy.status``, ``sleepy.notes``.
* ``sleepy/context`` ``{question, budget?, uri?}``: the CLI's ``context --json``.
* ``didOpen``/``didChange``/``didSave``/``didClose``: activity and open files, recorded in
  the store for the idle timer. Buffer contents are never read: notes describe files on
  disk only.

Command arguments are either one object (``{"question": ..., "budget": ..., "uri": ...}``)
or positional values in the documented order. ``uri`` picks the workspace folder (default:
the first). URIs outside every workspace folder (after resolving ``..`` and symlinks) and
malformed parameters get a JSON-RPC error response; the server stays up.

Settings come from ``initializationOptions`` and ``workspace/didChangeConfiguration``:
``backend``, ``idle_seconds`` (or ``idleSeconds``) and ``budget``, flat or under a
``sleepy``/``sleepyRepo`` key; an empty or zero value means the repo's config. Editor
settings may come from the repository, so ``backend`` may only turn the model off
(``static``), never on (see ``narrow_backend``).

Each workspace folder gets a ``Folder`` (its ``Repo``, activity recorder, refresh lock);
``SleepyServer.background_factory`` can start one background task per folder on
``initialized``, stopped on ``shutdown`` (the sleep scheduler's hook).

While serving on stdio, file descriptor 1 carries protocol messages only: everything else
written to stdout (stray prints, child processes) goes to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlparse

import attrs
import cattrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
    default_converter,
)
from pygls.uris import from_fs_path, to_fs_path

from sleepy_repo import __version__, activity, api
from sleepy_repo.config import BACKENDS, user_config_path
from sleepy_repo.errors import SleepyError
from sleepy_repo.framing import FrameGuard
from sleepy_repo.notes import MIRROR
from sleepy_repo.redact import redact_text

log = logging.getLogger(__name__)

COMMANDS = ("sleepy.ask", "sleepy.notes", "sleepy.refresh", "sleepy.status")
CONTEXT_METHOD = "sleepy/context"
REQUEST_FAILED = types.LSPErrorCodes.RequestFailed.value
PROGRESS_EVERY = 0.2  # seconds between progress reports of one phase
MAX_CITATIONS = 4  # per hover item
MAX_QUESTION = 2000  # characters


# -- settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Editor settings; None means "the repo's config"."""

    backend: str | None = None
    idle_seconds: float | None = None
    budget: int | None = None


_KEYS = {
    "backend": "backend",
    "idle_seconds": "idle_seconds",
    "idleSeconds": "idle_seconds",
    "budget": "budget",
}


def parse_settings(raw: Any, current: Settings) -> tuple[Settings, list[str]]:
    """Apply ``raw`` (flat, or under ``sleepy``/``sleepyRepo``) over ``current``. Returns
    the new settings and a problem per value refused (that value is left unchanged)."""
    if isinstance(raw, dict):
        for section in ("sleepy", "sleepyRepo", "sleepy-repo"):
            if isinstance(raw.get(section), dict):
                raw = raw[section]
                break
    if not isinstance(raw, dict):
        return current, [] if raw is None else [f"settings must be an object, got {raw!r}"]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        name = _KEYS.get(key)
        if name is None:
            continue  # other settings of the same section, e.g. the executable's path
        if name == "backend":
            if value in ("", None):
                values[name] = None
            elif value in BACKENDS:
                values[name] = value
            else:
                problems.append(f"backend must be one of {', '.join(BACKENDS)}, got {value!r}")
        elif name == "idle_seconds":
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                values[name] = float(value) or None
            elif value is None:
                values[name] = None
            else:
                problems.append(f"idle_seconds must be a number >= 0, got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            values[name] = value or None
        elif value is None:
            values[name] = None
        else:
            problems.append(f"budget must be a positive number of tokens, got {value!r}")
    return replace(current, **values), problems


def narrow_backend(requested: str | None, configured: str) -> tuple[str | None, str | None]:
    """The backend an editor setting may choose: editor settings can come from the
    repository (``.vscode/settings.json``, ``.dir-locals.el``), so they may only turn the
    model off (``static``) or repeat the configured backend, never turn one on or switch it.
    Returns the backend to use (None = the config's) and a problem, if one was refused."""
    if requested in (None, "static", configured):
        return requested, None
    return None, (
        f"backend {requested!r} from editor settings is ignored: editor settings may only "
        f'turn the model off ("static"); the configured backend is {configured!r}. Choose a '
        f"model backend in {user_config_path()} (or `sleepy-repo trust` the repository's "
        ".sleepy/config.toml)"
    )


# -- per-folder state ----------------------------------------------------------------------
class Background(Protocol):
    """A task that runs while the server serves a folder (e.g. the sleep scheduler)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(eq=False)
class Folder:
    """One workspace folder: its repository, activity recorder and background task."""

    uri: str
    path: Path  # resolved
    repo: api.Repo | None = None
    error: str | None = None  # why the repository could not be opened
    recorder: activity.Recorder | None = None
    background: Background | None = None
    refresh_lock: threading.Lock = field(default_factory=threading.Lock)
    shown: set[str] = field(default_factory=set)  # messages already shown once
    indexed: bool = False  # an index exists (checked until it does)

    @property
    def root(self) -> Path:
        return self.repo.root.resolve() if self.repo is not None else self.path


BackgroundFactory = Callable[["SleepyServer", Folder], Background]


# -- protocol: malformed parameters get an error response -------------------------------
@attrs.define
class _Malformed:
    """A message whose parameters did not fit the method's type."""

    id: Any
    method: str
    error: str
    jsonrpc: str = "2.0"


class SleepyProtocol(LanguageServerProtocol):
    """pygls drops a request whose parameters do not deserialize without any response
    (the client would wait forever); this answers it with ``InvalidParams``."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data and "id" in data:
                cause = exc.__cause__ or exc
                return _Malformed(data["id"], str(data["method"]), str(cause).split("\n")[0])
            if isinstance(data, dict) and "method" in data:
                log.warning("ignored %s: its parameters do not fit the method", data["method"])
                return _Malformed(None, str(data["method"]), "")
            raise

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _Malformed):
            if message.id is not None:
                error = JsonRpcInvalidParams(
                    f"invalid parameters for {message.method}: {message.error}"
                )
                self._send_response(message.id, error=error.to_response_error())
            return
        super().handle_message(message)


def plain_converter() -> cattrs.Converter:
    """pygls' converter, except that the parameters of methods outside the LSP spec
    (``sleepy/context``) and their results stay plain JSON instead of named tuples."""
    # pygls leaves default_converter unannotated
    converter = cast(Callable[[], cattrs.Converter], default_converter)()
    for cls in (JsonRPCRequestMessage, JsonRPCNotification, JsonRPCResponseMessage):
        converter.register_structure_hook(cls, lambda obj, cls: cls(**obj))
    return converter


# -- errors --------------------------------------------------------------------------------
def invalid(message: str) -> JsonRpcInvalidParams:
    return JsonRpcInvalidParams(message)


def failed(message: str) -> JsonRpcException:
    return JsonRpcException(message, code=REQUEST_FAILED)


# -- the server ----------------------------------------------------------------------------
class SleepyServer(LanguageServer):
    def __init__(
        self, default_repo: str | None = None, background_factory: BackgroundFactory | None = None
    ) -> None:
        super().__init__(
            "sleepy-repo",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=SleepyProtocol,
            converter_factory=plain_converter,
        )
        self.default_repo = default_repo
        self.background_factory = background_factory
        self.settings = Settings()
        self.folders: dict[Path, Folder] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: threading.Thread | None = None
        # store writes off the event loop, in order (activity, hover hits)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sleepy-writer")
        self._folders_lock = threading.Lock()
        self._closed = False

    # -- folders ---------------------------------------------------------------------
    def set_folders(self, uris: list[str]) -> None:
        """Serve exactly these workspace folders (opening repositories lazily)."""
        wanted: dict[Path, str] = {}
        for uri in uris:
            fs = to_fs_path(uri) if uri.startswith("file:") else None
            if fs:
                wanted[Path(os.path.realpath(fs))] = uri
        with self._folders_lock:
            for path in list(self.folders):
                if path not in wanted:
                    self._drop(self.folders.pop(path))
            for path, uri in wanted.items():
                self.folders.setdefault(path, Folder(uri=uri, path=path))

    def workspace_uris(self) -> list[str]:
        ws = self.workspace
        uris = [f.uri for f in ws.folders.values()]
        if not uris and ws.root_uri:
            uris = [ws.root_uri]
        if not uris and self.default_repo:
            uris = [Path(self.default_repo).resolve().as_uri()]
        return uris

    def open_folder(self, folder: Folder) -> api.Repo | None:
        """The folder's repository, opened on first use (None, with a message, if it
        cannot be opened)."""
        if folder.repo is None and folder.error is None:
            try:
                folder.repo = api.open_repo(folder.path)
            except SleepyError as exc:
                folder.error = str(exc)
                self.show_once(folder, folder.error, types.MessageType.Error)
        return folder.repo

    def folder_of(self, uri: str | None) -> Folder:
        """The folder of a document (``uri``), or the first folder when ``uri`` is None."""
        if uri is None:
            if not self.folders:
                raise failed("no workspace folder is open (open a folder, or pass --repo)")
            return next(iter(self.folders.values()))
        return self.locate(uri)[0]

    def locate(self, uri: Any) -> tuple[Folder, str]:
        """A document's folder and repo-relative path. Refuses anything but a ``file:``
        URI inside a workspace folder (after resolving ``..`` and symlinks)."""
        if not isinstance(uri, str) or not uri:
            raise invalid(f"a document URI is required, got {uri!r}")
        if urlparse(uri).scheme != "file":
            raise invalid(f"{uri}: only file: URIs inside the workspace are served")
        fs = to_fs_path(uri)
        try:
            full = Path(os.path.realpath(fs)) if fs else None
        except (ValueError, OSError):
            full = None
        if full is None:
            raise invalid(f"{uri} is not a valid file URI")
        for path in sorted(self.folders, key=lambda p: len(p.parts), reverse=True):
            if full.is_relative_to(path):
                folder = self.folders[path]
                repo = self.open_folder(folder)
                if repo is None:
                    raise failed(f"{folder.path}: {folder.error}")
                try:
                    return folder, full.relative_to(folder.root).as_posix()
                except ValueError:
                    break
        raise invalid(f"{uri} is outside the workspace")

    def repo_for(self, args: dict[str, Any]) -> api.Repo:
        folder = self.folder_of(args.get("uri"))
        repo = self.open_folder(folder)
        if repo is None:
            raise failed(f"{folder.path}: {folder.error}")
        return repo

    # -- messages --------------------------------------------------------------------
    def show(self, message: str, kind: types.MessageType = types.MessageType.Error) -> None:
        """``window/showMessage`` (from any thread)."""
        params = types.ShowMessageParams(type=kind, message=f"sleepy-repo: {message}")
        log.info("showMessage: %s", message)
        if self.loop is not None and threading.current_thread() is not self.loop_thread:
            self.loop.call_soon_threadsafe(self.window_show_message, params)
        else:
            self.window_show_message(params)

    def show_once(self, folder: Folder, message: str, kind: types.MessageType) -> None:
        if message not in folder.shown:
            folder.shown.add(message)
            self.show(message, kind)

    def backend_for(self, folder: Folder, repo: api.Repo) -> str | None:
        """The editor's backend setting, narrowed to what the user's config allows."""
        backend, problem = narrow_backend(self.settings.backend, repo.config.notes.backend)
        if problem is not None:
            self.show_once(folder, f"ignored setting: {problem}", types.MessageType.Warning)
        return backend

    def check_index(self, folder: Folder) -> None:
        """Say once per folder when it has no index yet (hover and lenses stay empty)."""
        repo = folder.repo
        if repo is None or folder.indexed or "no-index" in folder.shown:
            return
        with repo.store.read() as conn:
            if repo.store.get_meta(conn, "last_scan") is not None:
                folder.indexed = True
                return
        folder.shown.add("no-index")
        self.show(
            f"{repo.root} has no index yet: run the sleepy.refresh command "
            f"or `sleepy-repo refresh --repo {repo.root}`",
            types.MessageType.Warning,
        )

    # -- store writes off the loop ---------------------------------------------------
    def in_background(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._closed:
            return

        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("background store write failed")

        self.writer.submit(run)

    def record(self, uri: Any, what: str) -> None:
        """Activity of a document (``open``, ``change``, ``save``, ``close``)."""
        try:
            folder, rel = self.locate(uri)
        except JsonRpcException as exc:
            log.info("no activity recorded: %s", exc.message)
            return
        repo = folder.repo
        assert repo is not None
        if folder.recorder is None:
            folder.recorder = api.activity_recorder(repo, "lsp")
        rec = folder.recorder
        if what == "open":
            self.in_background(rec.opened, rel)
        elif what == "close":
            self.in_background(rec.closed, rel)
        else:
            self.in_background(rec.touch, what, rel)

    def saved(self, uri: Any) -> None:
        """A saved document: its folder's background task may refresh (off the loop)."""
        try:
            folder, rel = self.locate(uri)
        except JsonRpcException:
            return
        hook = getattr(folder.background, "saved", None)
        if hook is not None and not self._closed:
            threading.Thread(target=hook, args=(rel,), name="sleepy-saved", daemon=True).start()

    # -- lifecycle -------------------------------------------------------------------
    def start_background(self) -> None:
        if self.background_factory is None:
            return
        for folder in list(self.folders.values()):
            if folder.background is None and self.open_folder(folder) is not None:
                try:
                    folder.background = self.background_factory(self, folder)
                    folder.background.start()
                except Exception as exc:  # e.g. a model backend without its key
                    log.exception("background task of %s not started", folder.path)
                    folder.background = None
                    self.show_once(
                        folder,
                        f"sleep-time work is off for {folder.path}: {exc}",
                        types.MessageType.Warning,
                    )

    def _drop(self, folder: Folder) -> None:
        if folder.background is not None:
            try:
                folder.background.stop()
            except Exception:
                log.exception("stopping the background task of %s failed", folder.path)
            folder.background = None
        if folder.recorder is not None:
            self.in_background(folder.recorder.forget)

    def close(self) -> None:
        """On ``shutdown`` (or a lost connection): stop background tasks, forget this
        process's open files, finish pending store writes."""
        if self._closed:
            return
        with self._folders_lock:
            for folder in self.folders.values():
                self._drop(folder)
        self._closed = True
        self.writer.shutdown(wait=True)

    def shutdown(self) -> None:
        self.close()
        cast(Callable[[], None], super().shutdown)()  # pygls leaves it unannotated


# -- rendering -----------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def md(text: str) -> str:
    """Note text is untrusted (it quotes source files): shown literally, never as markup."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(text: str) -> str:
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}"


def citation_link(root: Path, path: str, start: int, end: int) -> str:
    where = f"{path}:{start}" if start == end else f"{path}:{start}-{end}"
    uri = from_fs_path(str(root / path)) or (root / path).as_uri()
    return f"[{md(where)}]({uri}#L{start})"


FROM_MIRROR = "from the repository's committed notes, unverified"
STALE = "⚠ stale: the cited code changed since this note was written"
CHANGED = (
    "⚠ the file changed since it was indexed: these notes describe the indexed content "
    "(run sleepy.refresh)"
)


def render_hover(h: api.HoverNotes, root: Path) -> str:
    lines: list[str] = []
    if h.target == "symbol":
        head = f"**{md(h.symbol or '')}** ({md(h.kind)})"
    else:
        head = f"**{md(h.path)}** (module)"
    lines.append(f"{head} · {citation_link(root, h.path, h.start_line, h.end_line)}")
    if h.signature:  # (a default value may be a secret: redacted like note text)
        lines += ["", code(redact_text(h.signature))]
    if h.file_changed:
        lines += ["", CHANGED]
    lines.append("")
    for e in h.items:
        it = e.item
        text = md(it.text)
        if it.question:
            text = f"**Q: {md(it.question)}** {text}"
        if e.source == MIRROR:  # whatever the committed file claims about itself
            text = f"*({FROM_MIRROR})* {text}"
        elif it.generated:
            model = f"{e.backend} {e.model}".strip()
            text = f"*(generated by {md(model)}; may be wrong)* {text}"
        cites: dict[tuple[str, int, int], None] = {}
        for c in it.citations:
            cites.setdefault((c.path, c.start_line, c.end_line), None)
        links = [citation_link(root, p, s, e_) for p, s, e_ in list(cites)[:MAX_CITATIONS]]
        if not links:
            links = [citation_link(root, h.path, it.start_line, it.end_line)]
        text += " — " + ", ".join(links)
        if it.stale:
            text += f" {STALE}"
        lines.append(f"- {text}")
    return "\n".join(lines)


# -- arguments -----------------------------------------------------------------------------
def arguments(args: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Command/request arguments: one object, or positional values in ``names`` order."""
    if args is None:
        return {}
    if isinstance(args, dict):
        return dict(args)
    if not isinstance(args, list | tuple):
        raise invalid(f"arguments must be an object or a list, got {args!r}")
    if len(args) == 1 and isinstance(args[0], dict):
        return dict(args[0])
    if len(args) > len(names):
        raise invalid(f"at most {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    return dict(zip(names, args, strict=False))


def question_arg(args: dict[str, Any]) -> str:
    q = args.get("question")
    if not isinstance(q, str):
        raise invalid(f"'question' must be a string, got {q!r}")
    if len(q) > MAX_QUESTION:
        raise invalid(f"the question is longer than {MAX_QUESTION} characters")
    return q


def budget_arg(args: dict[str, Any], settings: Settings) -> int | None:
    """The request's budget, checked as every shell checks it (``api.check_budget``)."""
    b = args.get("budget")
    if b is None:
        return settings.budget
    try:
        return api.check_budget(b)
    except SleepyError as exc:
        raise invalid(str(exc)) from None


@contextmanager
def failures(ls: SleepyServer, what: str) -> Iterator[None]:
    """Expected errors (``SleepyError``) as an error response and a message."""
    try:
        yield
    except SleepyError as exc:
        ls.show(f"{what}: {exc}")
        raise failed(str(exc)) from None


# -- features ------------------------------------------------------------------------------
def build_server(
    default_repo: str | None = None, background_factory: BackgroundFactory | None = None
) -> SleepyServer:
    server = SleepyServer(default_repo, background_factory)

    @server.feature(types.INITIALIZE)
    def initialize(ls: SleepyServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.loop_thread = threading.current_thread()
        ls.settings, problems = parse_settings(params.initialization_options, ls.settings)
        for p in problems:
            ls.show(f"ignored setting: {p}", types.MessageType.Warning)
        ls.set_folders(ls.workspace_uris())

    @server.feature(types.INITIALIZED)
    def initialized(ls: SleepyServer, params: types.InitializedParams) -> None:
        ls.start_background()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: SleepyServer, params: None) -> None:
        ls.close()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(
        ls: SleepyServer, params: types.DidChangeConfigurationParams
    ) -> None:
        ls.settings, problems = parse_settings(params.settings, ls.settings)
        for p in problems:
            ls.show(f"ignored setting: {p}", types.MessageType.Warning)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(ls: SleepyServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        ls.set_folders(ls.workspace_uris())
        ls.start_background()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: SleepyServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.record(params.text_document.uri, "open")

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: SleepyServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.record(params.text_document.uri, "change")

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
    def did_save(ls: SleepyServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.record(params.text_document.uri, "save")
        ls.saved(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: SleepyServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.record(params.text_document.uri, "close")

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: SleepyServer, params: types.HoverParams) -> types.Hover | None:
        folder, rel = ls.locate(params.text_document.uri)
        repo = folder.repo
        assert repo is not None
        notes = api.hover_notes(repo, rel, params.position.line + 1)
        if notes is None:
            ls.check_index(folder)
            return None
        ls.in_background(api.record_hover_hit, repo, notes.query, [rel])
        value = render_hover(notes, folder.root)
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, value))

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    def code_lens(ls: SleepyServer, params: types.CodeLensParams) -> list[types.CodeLens]:
        uri = params.text_document.uri
        folder, rel = ls.locate(uri)
        assert folder.repo is not None
        lenses = api.code_lenses(folder.repo, rel, ls.backend_for(folder, folder.repo))
        if not lenses:
            ls.check_index(folder)
        return [
            types.CodeLens(
                range=types.Range(
                    types.Position(lens.line - 1, 0), types.Position(lens.line - 1, 0)
                ),
                command=types.Command(
                    title=lens.title,
                    command="sleepy.notes",
                    arguments=[{"uri": uri, "symbol": lens.symbol}]
                    if lens.symbol
                    else [{"uri": uri}],
                ),
            )
            for lens in lenses
        ]

    @server.command("sleepy.notes")
    async def notes(ls: SleepyServer, *args: Any) -> dict[str, Any]:
        """``[uri, symbol?]``: the module's notes (``notes --json``); with ``symbol``,
        only the items about it and its members."""
        a = arguments(list(args), ("uri", "symbol"))
        folder, rel = ls.locate(a.get("uri"))
        assert folder.repo is not None
        symbol = a.get("symbol")
        if symbol is not None and not isinstance(symbol, str):
            raise invalid(f"'symbol' must be a string, got {symbol!r}")
        with failures(ls, "notes"):
            data = await asyncio.to_thread(api.module_notes, folder.repo, str(folder.root / rel))
        if symbol:
            for n in data["notes"]:
                n["items"] = [
                    i
                    for i in n["items"]
                    if i["symbol"]
                    and (i["symbol"] == symbol or i["symbol"].startswith(symbol + "."))
                ]
        return data

    @server.command("sleepy.ask")
    async def ask(ls: SleepyServer, *args: Any) -> dict[str, Any]:
        """``[question, budget?]`` or ``[{question, budget?, uri?}]``: ``ask --json``."""
        a = arguments(list(args), ("question", "budget", "uri"))
        question, budget = question_arg(a), budget_arg(a, ls.settings)
        repo = ls.repo_for(a)
        with failures(ls, "ask"):
            return await asyncio.to_thread(api.ask, repo, question, budget, source="lsp")

    @server.command("sleepy.status")
    async def status(ls: SleepyServer, *args: Any) -> dict[str, Any]:
        """``[]`` or ``[{uri?}]``: ``status --json``."""
        repo = ls.repo_for(arguments(list(args), ("uri",)))
        with failures(ls, "status"):
            return await asyncio.to_thread(api.status, repo)

    @server.command("sleepy.refresh")
    async def refresh(ls: SleepyServer, *args: Any) -> dict[str, Any]:
        """``[]`` or ``[{uri?, paths?}]``: index and write notes now (``refresh --json``),
        with ``$/progress`` when the client supports it."""
        a = arguments(list(args), ("uri", "paths"))
        folder = ls.folder_of(a.get("uri"))
        repo = ls.repo_for(a)
        paths = a.get("paths")
        if paths is not None and (
            not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)
        ):
            raise invalid(f"'paths' must be a list of strings, got {paths!r}")
        if not folder.refresh_lock.acquire(blocking=False):
            raise failed(f"a refresh of {repo.root} is already running")
        try:
            return await _refresh(ls, folder, repo, paths)
        finally:
            folder.refresh_lock.release()

    @server.feature(CONTEXT_METHOD)
    async def context(ls: SleepyServer, params: Any) -> dict[str, Any]:
        """``{question, budget?, uri?}``: exactly ``context --json``."""
        a = arguments(params, ("question", "budget", "uri"))
        question, budget = question_arg(a), budget_arg(a, ls.settings)
        repo = ls.repo_for(a)
        with failures(ls, "context"):
            ctx = await asyncio.to_thread(api.get_context, repo, question, budget, source=None)
        ls.in_background(api.log_context_hit, repo, ctx, "lsp")  # after the reply, in order
        return ctx.to_json()

    return server


class _Reporter:
    """api progress callbacks (worker thread) -> ``$/progress`` reports (event loop)."""

    def __init__(self, ls: SleepyServer, token: str | None) -> None:
        self.ls = ls
        self.token = token
        self.last: dict[str, float] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        first = phase not in self.last
        if not first and done < total and now - self.last[phase] < PROGRESS_EVERY:
            return
        self.last[phase] = now
        if self.token is None or self.ls.loop is None:
            return
        value = types.WorkDoneProgressReport(message=f"{phase} {done}/{total}")
        self.ls.loop.call_soon_threadsafe(self.ls.work_done_progress.report, self.token, value)


def _client_has_progress(ls: SleepyServer) -> bool:
    window = ls.client_capabilities.window
    return bool(window and window.work_done_progress)


async def _refresh(
    ls: SleepyServer, folder: Folder, repo: api.Repo, paths: list[str] | None
) -> dict[str, Any]:
    token: str | None = None
    if _client_has_progress(ls):
        token = f"sleepy-refresh-{uuid.uuid4().hex}"
        try:
            await ls.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: refresh without progress
            log.info("no progress token: %s", exc)
            token = None
    if token is not None:
        ls.work_done_progress.begin(
            token, types.WorkDoneProgressBegin(title="sleepy-repo refresh", message="starting")
        )
    only = [str(folder.root / p) for p in paths] if paths else None
    try:
        result = await asyncio.to_thread(
            api.refresh,
            repo,
            only,
            backend=ls.backend_for(folder, repo),
            progress=_Reporter(ls, token),
        )
    except SleepyError as exc:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="failed"))
        ls.show(f"refresh failed: {exc}")
        raise failed(str(exc)) from None
    except Exception as exc:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="failed"))
        log.exception("refresh failed")
        ls.show(f"refresh failed (a bug in sleepy-repo; see the server log): {exc}")
        raise
    written = sum(n["written"] for n in result["notes"].values())
    summary = f"{result['modules']} modules, {result['parsed']} parsed, {written} notes written"
    if token is not None:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=summary))
    model = result.get("model") or {}
    if model.get("stopped"):
        ls.show(
            f"model notes stopped: {model['stopped']}; {model.get('queued', 0)} modules "
            "left queued",
            types.MessageType.Warning,
        )
    for backend, n in result["notes"].items():
        if n["failed"]:
            ls.show(
                f"{len(n['failed'])} modules failed ({backend}): {n['failed'][0]['error']}",
                types.MessageType.Warning,
            )
    folder.shown.discard("no-index")
    return result


# -- entry point ---------------------------------------------------------------------------
def parse_tcp(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SleepyError(f"--tcp must be HOST:PORT (e.g. 127.0.0.1:2087), got {value!r}")
    return host.strip("[]"), int(port)


def _log_to(log_file: str | None) -> None:
    root = logging.getLogger()
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(handler)
    if root.level > logging.DEBUG:  # pygls logs every message body at INFO
        logging.getLogger("pygls").setLevel(max(root.level, logging.WARNING))


def editor_sleeper(ls: SleepyServer, folder: Folder) -> Background:
    """The sleep scheduler for one folder (``daemon.EditorSleeper``), with the editor's
    backend and idle settings."""
    from sleepy_repo.daemon import EditorSleeper  # the daemon is a shell over the core API

    assert folder.repo is not None
    backend = ls.backend_for(folder, folder.repo)
    return EditorSleeper(folder.repo, backend, ls.settings.idle_seconds)


def serve(repo: str | None, tcp: str | None = None, log_file: str | None = None) -> None:
    """Run the language server until the client exits (stdio) or forever (TCP)."""
    address = parse_tcp(tcp) if tcp else None
    _log_to(log_file)
    server = build_server(repo, background_factory=editor_sleeper)
    if address is not None:
        server.start_tcp(*address)
        return
    # fd 1 is the protocol channel: anything else that writes to stdout goes to stderr
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    # only well-formed frames reach pygls: a bad header would make it lose the frame
    # boundary and never answer again
    _guard, frames = FrameGuard.piped(sys.stdin.buffer)
    server.start_io(frames, protocol_out)
