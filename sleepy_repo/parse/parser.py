"""Tree-sitter parsing: one generic loop over the tags query's matches, for every language.

Language differences live in ``queries/<lang>-tags.scm`` (what is a definition, a call, an
import) and in the small ``_RULES`` table below (what a comment looks like, how a symbol is
made public, which top-level nodes form the module header).

``parse_module`` never raises on any input bytes: what parsed is kept and ERROR/MISSING
nodes are counted in ``ModuleFacts.syntax_errors``.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter

from tree_sitter import Node, Parser, QueryCursor

from sleepy_repo.parse.facts import Import, ModuleFacts, Reference, Symbol
from sleepy_repo.parse.languages import LANGUAGES, tags_query, ts_language

log = logging.getLogger(__name__)

__all__ = ["parse_module"]

_SIGNATURE_MAX = 300
_CLASS_LIKE = frozenset({"class", "struct", "interface", "enum", "trait", "impl", "trait_impl"})
_FUNCTION_LIKE = frozenset({"function", "method"})
_LICENSE_RE = re.compile(r"copyright|spdx-license|licensed under|all rights reserved", re.I)
_SPACE_RE = re.compile(r"\s+")
_TRAILING_COMMA_RE = re.compile(r",\s*\n\s*([)\]>])")
_OPEN_SPACE_RE = re.compile(r"([(\[<]) ")
_CLOSE_SPACE_RE = re.compile(r" ([)\]>])")
_STRING_PREFIX_RE = re.compile(r"^[rRuUbBfFtT]*")


# --- per-language rules -------------------------------------------------------------------


# An export rule sees: the simple name, the @definition node, the anchor (the node docs sit
# above: the definition or its export/type wrapper) and the enclosing definition's kind.
_ExportRule = Callable[[str, Node, Node, "str | None"], bool]


def _python_exported(name: str, node: Node, anchor: Node, parent_kind: str | None) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _go_exported(name: str, node: Node, anchor: Node, parent_kind: str | None) -> bool:
    return name[:1].isupper()


def _rust_exported(name: str, node: Node, anchor: Node, parent_kind: str | None) -> bool:
    if parent_kind in ("trait", "trait_impl"):
        return True  # trait members are as public as the trait / the implementing type
    first = node.named_child(0)
    return first is not None and first.type == "visibility_modifier"


def _js_exported(name: str, node: Node, anchor: Node, parent_kind: str | None) -> bool:
    if parent_kind is None or parent_kind == "module":
        return anchor.type == "export_statement"
    if name.startswith("#"):
        return False
    first = node.named_child(0)
    if first is not None and first.type == "accessibility_modifier":
        return first.text not in (b"private", b"protected")
    return True


@dataclass(frozen=True, slots=True)
class _Rules:
    comment_types: frozenset[str]
    # top-level nodes that always belong to the header (imports)
    header_types: frozenset[str] = frozenset()
    # top-level nodes that belong to the header when they hold an import and no definition
    import_containers: frozenset[str] = frozenset()
    # top-level nodes that may sit inside the header without ending it (package clause, ...)
    neutral_types: frozenset[str] = frozenset()
    # nodes wrapping a definition: its doc comment sits above them, `export` lives there
    wrapper_types: frozenset[str] = frozenset()
    # nodes allowed between a doc comment and its definition (attributes, decorators)
    between_types: frozenset[str] = frozenset()
    docstrings: bool = False  # Python-style docstrings instead of leading comments
    module_doc_anchor: str | None = None  # module doc must touch this node (Go: package clause)
    path_sep: str = "."  # separator of nested import paths ("::" in Rust)
    exported: _ExportRule = field(default=_python_exported)


_JS_RULES = _Rules(
    comment_types=frozenset({"comment", "html_comment"}),
    header_types=frozenset({"import_statement"}),
    import_containers=frozenset(
        {"lexical_declaration", "variable_declaration", "expression_statement", "export_statement"}
    ),
    neutral_types=frozenset({"hash_bang_line"}),
    wrapper_types=frozenset({"export_statement", "ambient_declaration"}),
    between_types=frozenset({"decorator"}),
    exported=_js_exported,
)

_RULES: dict[str, _Rules] = {
    "python": _Rules(
        comment_types=frozenset({"comment"}),
        header_types=frozenset(
            {"import_statement", "import_from_statement", "future_import_statement"}
        ),
        import_containers=frozenset({"if_statement", "try_statement"}),
        docstrings=True,
        exported=_python_exported,
    ),
    "javascript": _JS_RULES,
    "typescript": _JS_RULES,
    "tsx": _JS_RULES,
    "go": _Rules(
        comment_types=frozenset({"comment"}),
        header_types=frozenset({"import_declaration"}),
        neutral_types=frozenset({"package_clause"}),
        wrapper_types=frozenset({"type_declaration"}),
        module_doc_anchor="package_clause",
        exported=_go_exported,
    ),
    "rust": _Rules(
        comment_types=frozenset({"line_comment", "block_comment"}),
        header_types=frozenset({"use_declaration", "extern_crate_declaration"}),
        import_containers=frozenset({"mod_item"}),
        neutral_types=frozenset({"inner_attribute_item", "attribute_item"}),
        between_types=frozenset({"attribute_item"}),
        path_sep="::",
        exported=_rust_exported,
    ),
}


# --- small helpers ------------------------------------------------------------------------


_local = threading.local()


def _parser(lang: str) -> Parser:
    """One Parser per language and thread (parsers are not thread-safe)."""
    parsers: dict[str, Parser] | None = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(lang)
    if parser is None:
        parser = parsers[lang] = Parser(ts_language(lang))
    return parser


def _line_count(source: bytes) -> int:
    if not source:
        return 0
    return source.count(b"\n") + (0 if source.endswith(b"\n") else 1)


def _end_row(node: Node) -> int:
    """0-based last row of a node, not counting a trailing newline it swallowed."""
    end = node.end_point
    if end.column == 0 and end.row > node.start_point.row:
        return end.row - 1
    return end.row


def _one_line(text: str) -> str:
    """A definition head on one line: whitespace collapsed, no body opener, length-capped."""
    text = text.rstrip()
    if "\n" in text or "  " in text or "\t" in text:
        text = _SPACE_RE.sub(" ", _TRAILING_COMMA_RE.sub(r"\1", text)).strip()
        text = _CLOSE_SPACE_RE.sub(r"\1", _OPEN_SPACE_RE.sub(r"\1", text))
    text = text.rstrip(" \r{:;")
    if len(text) > _SIGNATURE_MAX:
        text = text[: _SIGNATURE_MAX - 1].rstrip() + "…"
    return text


def _text(source: bytes, node: Node) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _strip_quotes(text: str) -> str:
    return text.strip().strip("\"'`")


def _clean_string_literal(text: str) -> str:
    """A Python string literal's content, dedented (escapes are not interpreted)."""
    if text[:1] not in ("'", '"'):
        text = _STRING_PREFIX_RE.sub("", text, count=1)
    for quote in ('"""', "'''", '"', "'"):
        if text.startswith(quote):
            text = text[len(quote) :]
            if text.endswith(quote):
                text = text[: -len(quote)]
            break
    return inspect.cleandoc(text) if "\n" in text else text.strip()


def _clean_comment(text: str) -> str:
    """A comment's text without its markers (``//``, ``///``, ``//!``, ``/** */``, ``#``)."""
    text = text.strip()
    lines: list[str]
    if text.startswith("/*"):
        text = text[2:]
        if text.endswith("*/"):
            text = text[:-2]
        text = text.lstrip("*!")
        lines = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("*"):
                line = line[1:]
                if line.startswith(" "):
                    line = line[1:]
            lines.append(line.rstrip())
    else:
        lines = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("//"):
                line = line[2:].lstrip("/!")
            elif line.startswith("#"):
                line = line[1:]
            if line.startswith(" "):
                line = line[1:]
            lines.append(line.rstrip())
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _is_inner_doc(text: bytes) -> bool:
    return text.startswith((b"//!", b"/*!"))


def _docstring(body: Node | None, source: bytes) -> tuple[str, Node | None]:
    """The docstring at the start of a Python block/module and its expression node."""
    if body is None:
        return "", None
    for i in range(body.named_child_count):
        child = body.named_child(i)
        if child is None or child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_child_count == 1:
            string = child.named_child(0)
            if string is not None and string.type == "string":
                raw = source[string.start_byte : string.end_byte].decode("utf-8", "replace")
                return _clean_string_literal(raw), child
        return "", None
    return "", None


def _is_string_statement(node: Node) -> bool:
    first = node.named_child(0)
    return node.named_child_count == 1 and first is not None and first.type == "string"


def _comment_block(anchor: Node, rules: _Rules, source: bytes) -> str:
    """The contiguous comment block right above ``anchor`` (attributes may sit between)."""
    parts: list[bytes] = []
    expected = anchor.start_point.row
    sib = anchor.prev_named_sibling
    comment_types = rules.comment_types
    while sib is not None:
        kind = sib.type
        if kind in comment_types:
            if _end_row(sib) < expected - 1:
                break
            text = source[sib.start_byte : sib.end_byte]
            if _is_inner_doc(text):
                break
            prev = sib.prev_named_sibling
            if (
                prev is not None
                and prev.type not in comment_types
                and prev.end_point.row == sib.start_point.row
            ):
                break  # a trailing comment of the code line above
            parts.append(text)
            expected = sib.start_point.row
            sib = prev
        elif kind in rules.between_types:
            if _end_row(sib) < expected - 1:
                break
            expected = sib.start_point.row
            sib = sib.prev_named_sibling
        else:
            break
    if not parts:
        return ""
    parts.reverse()
    return _clean_comment("\n".join(p.decode("utf-8", "replace").rstrip() for p in parts))


def _anchor(node: Node, rules: _Rules) -> Node:
    """The wrapper a definition leads (``export``, a one-spec ``type``), else the definition."""
    anchor = node
    wrapper = anchor.parent
    while wrapper is not None and wrapper.type in rules.wrapper_types:
        prev = anchor.prev_named_sibling
        while prev is not None and prev.type in rules.between_types:
            prev = prev.prev_named_sibling
        if prev is not None:
            break
        anchor = wrapper
        wrapper = anchor.parent
    return anchor


def _count_errors(root: Node) -> int:
    if not root.has_error:
        return 0
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(child for child in node.children if child.has_error)
    return count


def _contains(starts: list[int], node: Node) -> bool:
    """Whether a sorted list of byte offsets has one inside ``node``."""
    i = bisect_left(starts, node.start_byte)
    return i < len(starts) and starts[i] < node.end_byte


# a Reference without NamedTuple.__new__'s Python-level call (it is the same tuple)
_new_tuple = tuple.__new__


# What a query pattern is about, decided from its (mandatory) capture names on first sight.
_REFERENCE = "reference"
_IMPORT = "import"
_OTHER = "other"  # loose import names, export lists
_REFERENCE_KEY = "name.reference.call"
_LOOSE_KEYS = ("import.name", "import.glob", "import.default")
_Role = str | tuple[str, str, str]  # or (kind, definition key, name key)
_ROLES: dict[str, dict[int, _Role]] = {}


def _pattern_roles(lang: str) -> dict[int, _Role]:
    return _ROLES.setdefault(lang, {})


def _role_of(caps: dict[str, list[Node]]) -> _Role:
    if _REFERENCE_KEY in caps:
        return _REFERENCE
    if "import.statement" in caps:
        return _IMPORT
    for key in caps:
        if key.startswith("name.definition."):
            return (key[16:], key[5:], key)
        if key.startswith("name.scope."):
            return ("@" + key[11:], key[5:], key)
    return _OTHER


# --- the generic loop ---------------------------------------------------------------------


@dataclass(slots=True)
class _Scope:
    """An open definition or scope while walking definitions in source order."""

    end_byte: int
    qualname: str
    kind: str
    exported: bool
    dropped: bool  # inside a function body: members are dropped too


# a definition match: (start_byte, -end_byte, kind, node, name, body, receiver, docstring)
# kind is "@<kind>" for a scope that is not a symbol itself (Rust impl, inline module)
_DefMatch = tuple[int, int, str, Node, Node, "Node | None", "Node | None", "Node | None"]


@dataclass(slots=True)
class _ImportStmt:
    node: Node
    modules: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    submodule: bool = False


def parse_module(path: str, source: bytes, lang: str) -> ModuleFacts:
    """Parse one file into ModuleFacts. Never raises on any bytes; unknown ``lang`` is an error."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; known: {sorted(LANGUAGES)}")
    facts = ModuleFacts(path=path, lang=lang, line_count=_line_count(source))
    try:
        _parse_into(facts, source, lang)
    except Exception:  # never let one odd file break indexing
        log.exception("parse failed for %s (%s); keeping partial facts", path, lang)
    return facts


def _parse_into(facts: ModuleFacts, source: bytes, lang: str) -> None:
    rules = _RULES[lang]
    tree = _parser(lang).parse(source)
    root = tree.root_node
    facts.syntax_errors = _count_errors(root)
    if facts.line_count == 0:
        return
    last_line = facts.line_count

    add_reference = facts.references.append
    defs: list[_DefMatch] = []
    stmts: dict[int, _ImportStmt] = {}
    loose: list[tuple[Node, str]] = []  # import names/globs captured outside a statement match
    export_names: set[str] = set()

    roles = _pattern_roles(lang)
    for pattern, caps in QueryCursor(tags_query(lang)).matches(root):
        role = roles.get(pattern)
        if role is None:
            role = roles[pattern] = _role_of(caps)
        if role is _REFERENCE:
            for node in caps[_REFERENCE_KEY]:
                line = node.start_point.row + 1
                if line > last_line:
                    line = last_line
                name = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
                add_reference(_new_tuple(Reference, (name, line)))
        elif isinstance(role, tuple):  # a definition or a scope
            kind, outer_key, name_key = role
            node = caps[outer_key][0]
            body = caps.get("body")
            receiver = caps.get("receiver")
            doc = caps.get("doc")
            defs.append(
                (
                    node.start_byte,
                    -node.end_byte,
                    kind,
                    node,
                    caps[name_key][0],
                    body[0] if body else None,
                    receiver[0] if receiver else None,
                    doc[0] if doc else None,
                )
            )
        elif role is _IMPORT:
            stmt_node = caps["import.statement"][0]
            stmt = stmts.get(stmt_node.id)
            if stmt is None:
                stmt = stmts[stmt_node.id] = _ImportStmt(stmt_node)
            for node in caps.get("import.module", ()):
                module = _strip_quotes(_text(source, node))
                if module and module not in stmt.modules:
                    stmt.modules.append(module)
            for node in caps.get("import.submodule", ()):
                stmt.modules.append(_text(source, node))
                stmt.submodule = True
            for key in _LOOSE_KEYS:
                loose.extend((node, key) for node in caps.get(key, ()))
        else:
            for key in _LOOSE_KEYS:
                loose.extend((node, key) for node in caps.get(key, ()))
            export_names.update(_text(source, node) for node in caps.get("export.name", ()))

    imports_sorted = _collect_imports(facts, stmts, loose, rules, source)
    def_starts = _collect_symbols(facts, defs, rules, source, export_names)
    _module_header(facts, root, rules, source, imports_sorted, def_starts)


def _collect_symbols(
    facts: ModuleFacts,
    defs: list[_DefMatch],
    rules: _Rules,
    source: bytes,
    export_names: set[str],
) -> list[int]:
    """Turn definition matches into Symbols (nesting, kinds, docs, exports); sorted def starts."""
    defs.sort(key=itemgetter(0, 1))
    last_line = facts.line_count
    symbols = facts.symbols
    by_qualname: dict[str, Symbol] = {}
    stack: list[_Scope] = []
    seen_names: set[int] = set()
    def_starts: list[int] = []
    for start_byte, _neg_end, kind, node, name_node, body, receiver, doc_node in defs:
        if name_node.start_byte in seen_names:
            continue  # the same definition captured by two patterns: keep the outer node
        seen_names.add(name_node.start_byte)
        def_starts.append(start_byte)
        while stack and stack[-1].end_byte <= start_byte:
            stack.pop()
        top = stack[-1] if stack else None
        end_byte = node.end_byte
        if top is not None and (top.dropped or top.kind in _FUNCTION_LIKE):
            stack.append(_Scope(end_byte, "", kind, False, True))
            continue
        name = source[name_node.start_byte : name_node.end_byte].decode("utf-8", "replace")
        if not name:
            continue
        is_scope = kind.startswith("@")
        if is_scope:
            kind = kind[1:]

        # where it lives: explicit receiver (Go) or the enclosing definition/scope
        parent: str | None = None
        parent_kind: str | None = None
        parent_exported = True
        prefix = ""
        if receiver is not None:
            parent = source[receiver.start_byte : receiver.end_byte].decode("utf-8", "replace")
            parent_kind = "struct"
            known = by_qualname.get(parent)
            parent_exported = (
                known.exported
                if known is not None
                else rules.exported(parent, receiver, receiver, None)
            )
            prefix = parent + "."
        elif top is not None:
            parent_kind = top.kind
            parent_exported = top.exported
            prefix = top.qualname + "."
            if top.kind in _CLASS_LIKE:
                parent = top.qualname
                if kind == "function":
                    kind = "method"
        qualname = prefix + name

        anchor = _anchor(node, rules) if rules.wrapper_types else node
        own = rules.exported(name, node, anchor, parent_kind) or (
            parent_kind is None and name in export_names
        )
        exported = own and parent_exported

        if is_scope:
            if kind in ("impl", "trait_impl"):
                known = by_qualname.get(qualname)
                exported = known.exported if known is not None else True
            stack.append(_Scope(end_byte, qualname, kind, exported, False))
            continue

        name_row = name_node.start_point.row
        start_line = min(name_row + 1, last_line)
        end_row, end_column = node.end_point
        if end_column == 0 and end_row > name_row:
            end_row -= 1  # the node swallowed a trailing newline
        end_line = min(max(end_row + 1, start_line), last_line)
        sig_start = start_byte
        if rules.between_types and node.start_point.row != name_row:
            for i in range(node.child_count):
                child = node.child(i)
                if child is not None and child.type not in rules.between_types:
                    sig_start = child.start_byte
                    break
        sig_end = body.start_byte if body is not None and body.start_byte > sig_start else end_byte
        signature = _one_line(source[sig_start:sig_end].decode("utf-8", "replace"))
        if rules.docstrings:
            doc = _clean_string_literal(_text(source, doc_node)) if doc_node is not None else ""
        else:
            doc = _comment_block(anchor, rules, source)
        sym = Symbol(name, qualname, kind, start_line, end_line, signature, doc, parent, exported)
        symbols.append(sym)
        by_qualname.setdefault(qualname, sym)
        stack.append(_Scope(end_byte, qualname, kind, exported, False))
    return def_starts


def _collect_imports(
    facts: ModuleFacts,
    stmts: dict[int, _ImportStmt],
    loose: list[tuple[Node, str]],
    rules: _Rules,
    source: bytes,
) -> list[int]:
    """Group names into their statements, flatten nested lists; sorted statement starts."""
    if not stmts:
        return []
    ordered = sorted(stmts.values(), key=lambda s: (s.node.start_byte, -s.node.end_byte))
    starts = [s.node.start_byte for s in ordered]
    sep = rules.path_sep
    for node, key in loose:
        i = bisect_right(starts, node.start_byte) - 1
        while i >= 0 and ordered[i].node.end_byte < node.end_byte:
            i -= 1  # innermost statement that contains the name
        if i < 0:
            continue
        if key == "import.glob":
            ordered[i].names.append("*")
        elif key == "import.default":
            ordered[i].names.append("default")
        else:
            name = source[node.start_byte : node.end_byte].decode("utf-8", "replace")
            ordered[i].names.append(name)

    last_line = facts.line_count
    imports = facts.imports
    open_stmts: list[tuple[int, str]] = []  # (end_byte, module) of enclosing statements
    for index, stmt in enumerate(ordered):
        node = stmt.node
        while open_stmts and open_stmts[-1][0] <= node.start_byte:
            open_stmts.pop()
        line = min(node.start_point.row + 1, last_line)
        modules = stmt.modules
        if open_stmts and modules:
            modules = [open_stmts[-1][1] + sep + m for m in modules]
        if stmt.submodule:
            modules = ["self" + sep + m for m in modules]
        if len(modules) == 1:
            module = modules[0]
            open_stmts.append((node.end_byte, module))
            plain: list[str] = []
            nested: dict[str, list[str]] = {}
            for name in stmt.names:
                if sep != "." and sep in name:
                    head, _, tail = name.rpartition(sep)
                    nested.setdefault(module + sep + head, []).append(tail)
                else:
                    plain.append(name)
            holds_list = (
                index + 1 < len(ordered) and ordered[index + 1].node.end_byte <= node.end_byte
            )
            if plain or not (nested or holds_list):
                imports.append(Import(module, tuple(dict.fromkeys(plain)), line))
            for sub, names in nested.items():
                imports.append(Import(sub, tuple(dict.fromkeys(names)), line))
        else:
            for module in modules:
                imports.append(Import(module, (), line))
    return starts


def _module_header(
    facts: ModuleFacts,
    root: Node,
    rules: _Rules,
    source: bytes,
    import_starts: list[int],
    def_starts: list[int],
) -> None:
    """Module doc and ``header_end`` (last line of the leading doc + import block)."""
    header_end_row = -1
    skip_id: int | None = None
    count = root.named_child_count
    if rules.docstrings:
        doc, doc_node = _docstring(root, source)
        if doc_node is not None:
            facts.doc = doc
            header_end_row = _end_row(doc_node)
            skip_id = doc_node.id
    else:
        doc, doc_end = _comment_module_doc(root, rules, source)
        if doc:
            facts.doc = doc
            header_end_row = doc_end
    comment_types = rules.comment_types
    for i in range(count):
        child = root.named_child(i)
        if child is None:
            break
        kind = child.type
        if kind in comment_types or kind in rules.neutral_types or child.id == skip_id:
            continue
        if kind == "expression_statement" and _is_string_statement(child):
            continue  # a directive such as "use strict"
        if kind in rules.header_types or (
            kind in rules.import_containers
            and _contains(import_starts, child)
            and not _contains(def_starts, child)
        ):
            header_end_row = max(header_end_row, _end_row(child))
            continue
        break
    if header_end_row >= 0:
        facts.header_end = min(header_end_row + 1, facts.line_count)


def _comment_module_doc(root: Node, rules: _Rules, source: bytes) -> tuple[str, int]:
    """The leading comment block of a file (not a license, not the first item's doc)."""
    groups: list[list[Node]] = []
    following: Node | None = None
    prev_end = -2
    comment_types = rules.comment_types
    for i in range(root.named_child_count):
        child = root.named_child(i)
        if child is None:
            break
        if child.type in comment_types:
            if not groups or child.start_point.row > prev_end + 1:
                groups.append([])
            groups[-1].append(child)
            prev_end = _end_row(child)
        elif child.type in rules.neutral_types and child.type != rules.module_doc_anchor:
            continue
        else:
            following = child
            break
    if not groups:
        return "", -1

    def text_of(group: list[Node]) -> str:
        return "\n".join(
            source[n.start_byte : n.end_byte].decode("utf-8", "replace").rstrip() for n in group
        )

    inner = [n for g in groups for n in g if _is_inner_doc(source[n.start_byte : n.end_byte])]
    if inner:  # Rust //! docs
        return _clean_comment(text_of(inner)), _end_row(inner[-1])
    touches = following is not None and following.start_point.row <= _end_row(groups[-1][-1]) + 1
    if rules.module_doc_anchor is not None:
        if not touches or following is None or following.type != rules.module_doc_anchor:
            return "", -1
        groups = groups[-1:]
    elif touches and following is not None and following.type not in rules.header_types:
        groups = groups[:-1]  # it documents the first item
    for group in groups:
        text = text_of(group)
        if not _LICENSE_RE.search(text):
            return _clean_comment(text), _end_row(group[-1])
    return "", -1
