"""The parse layer: tags queries, parse_module and resolve_import, for every language."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleepy_repo.parse import (
    Import,
    ModuleFacts,
    Reference,
    Symbol,
    language_for_path,
    parse_module,
    resolve_import,
)
from sleepy_repo.parse.languages import LANGUAGES

DATA = Path(__file__).parent / "data" / "languages"

SAMPLES = {
    "python": DATA / "python" / "cart.py",
    "javascript": DATA / "javascript" / "cart.js",
    "typescript": DATA / "typescript" / "cart.ts",
    "tsx": DATA / "tsx" / "CartView.tsx",
    "go": DATA / "go" / "cart.go",
    "rust": DATA / "rust" / "cart.rs",
}


def _parse(lang: str) -> ModuleFacts:
    path = SAMPLES[lang]
    detected = language_for_path(path.name)
    assert detected == lang
    return parse_module(f"{lang}/{path.name}", path.read_bytes(), detected)


def _symbol(facts: ModuleFacts, qualname: str) -> Symbol:
    sym = facts.symbol(qualname)
    assert sym is not None, f"{qualname} not in {[s.qualname for s in facts.symbols]}"
    return sym


def _check_invariants(facts: ModuleFacts, source: bytes) -> None:
    lines = source.decode("utf-8", "replace").split("\n")
    for sym in facts.symbols:
        assert 1 <= sym.start_line <= sym.end_line <= facts.line_count, sym
        assert sym.name in lines[sym.start_line - 1], sym
        assert "\n" not in sym.signature, sym
    for ref in facts.references:
        assert 1 <= ref.line <= facts.line_count, ref
    for imp in facts.imports:
        assert 1 <= imp.line <= facts.line_count, imp
    assert 0 <= facts.header_end <= facts.line_count
    assert facts.syntax_errors >= 0


# --- symbols ------------------------------------------------------------------------------

# (lang, qualname, kind, start_line, end_line, signature, doc, parent, exported)
KNOWN_SYMBOLS = [
    (
        "python",
        "Cart.add",
        "method",
        38,
        45,
        "def add(self, item: Item) -> None",
        "Add an item, merging with an existing line.",
        "Cart",
        True,
    ),
    ("python", "Item", "class", 23, 28, "class Item", "One line of the cart.", None, True),
    (
        "python",
        "Cart.total",
        "method",
        47,
        53,
        "def total(self, discount: float = 0.0) -> float",
        "The total price after discount.",
        "Cart",
        True,
    ),
    ("python", "_helper", "function", 69, 70, "def _helper()", "", None, False),
    (
        "javascript",
        "loadCart",
        "function",
        58,
        63,
        "function loadCart(file)",
        "Load a cart from a JSON file.\n@param {string} file",
        None,
        True,
    ),
    (
        "javascript",
        "Cart.add",
        "method",
        33,
        41,
        "add(item)",
        "Add an item, merging with an existing line.",
        "Cart",
        True,
    ),
    ("javascript", "Cart.#audit", "method", 49, 51, "#audit()", "", "Cart", False),
    (
        "javascript",
        "sumCarts",
        "function",
        66,
        66,
        "const sumCarts = (carts) =>",
        "Sum of many carts.",
        None,
        True,
    ),
    ("javascript", "helper", "function", 68, 70, "function helper()", "", None, False),
    (
        "typescript",
        "Cart",
        "class",
        35,
        63,
        "class Cart extends Priced",
        "A customer's cart.",
        None,
        True,
    ),
    (
        "typescript",
        "Item",
        "interface",
        14,
        18,
        "interface Item",
        "One line of the cart.",
        None,
        True,
    ),
    (
        "typescript",
        "CartState",
        "enum",
        21,
        25,
        "enum CartState",
        "Where a cart is in checkout.",
        None,
        True,
    ),
    ("typescript", "Sku", "type", 11, 11, "type Sku = string", "A stock keeping unit.", None, True),
    (
        "typescript",
        "makeCart",
        "function",
        66,
        70,
        "function makeCart<T extends string>(owner: T): Cart",
        "Build a cart for an owner.",
        None,
        True,
    ),
    ("typescript", "Cart.audit", "method", 60, 62, "private audit(): void", "", "Cart", False),
    (
        "typescript",
        "Priced.total",
        "method",
        29,
        29,
        "abstract total(discount?: number): Money",
        "",
        "Priced",
        True,
    ),
    (
        "tsx",
        "CartView",
        "function",
        30,
        43,
        "function CartView({ cart, onCheckout }: CartViewProps)",
        "The whole cart, with a checkout button.",
        None,
        True,
    ),
    ("tsx", "ItemRow", "function", 19, 25, None, "One row of the cart.", None, False),
    (
        "tsx",
        "LegacyCart.render",
        "method",
        48,
        50,
        "render()",
        "Render the legacy markup.",
        "LegacyCart",
        True,
    ),
    ("tsx", "Density", "type", 16, 16, None, "Visual density of a list.", None, False),
    (
        "go",
        "Cart.Add",
        "method",
        49,
        58,
        "func (c *Cart) Add(item Item)",
        "Add adds an item, merging with an existing line.",
        "Cart",
        True,
    ),
    (
        "go",
        "Item",
        "struct",
        20,
        24,
        "type Item struct",
        "Item is one line of the cart.",
        None,
        True,
    ),
    (
        "go",
        "Pricer",
        "interface",
        27,
        29,
        "type Pricer interface",
        "Pricer prices a cart.",
        None,
        True,
    ),
    ("go", "ID", "type", 33, 33, "ID string", "ID identifies a cart.", None, True),
    ("go", "Cart.audit", "method", 72, 74, "func (c *Cart) audit() string", "", "Cart", False),
    ("go", "NewCart", "function", 44, 46, None, "NewCart makes an empty cart.", None, True),
    (
        "rust",
        "Cart.add",
        "method",
        53,
        57,
        "pub fn add(&mut self, item: Item)",
        "Add an item, merging with an existing line.",
        "Cart",
        True,
    ),
    ("rust", "Item", "struct", 17, 21, "pub struct Item", "One line of the cart.", None, True),
    (
        "rust",
        "Priced",
        "trait",
        24,
        32,
        "pub trait Priced",
        "Something that can be priced.",
        None,
        True,
    ),
    (
        "rust",
        "Priced.total",
        "method",
        26,
        26,
        "fn total(&self, discount: f64) -> f64",
        "The total price after discount.",
        "Priced",
        True,
    ),
    (
        "rust",
        "CartState",
        "enum",
        35,
        38,
        "pub enum CartState",
        "Where a cart is in checkout.",
        None,
        True,
    ),
    ("rust", "Cart.audit", "method", 59, 61, "fn audit(&self) -> usize", "", "Cart", False),
    ("rust", "Cart.fmt", "method", 72, 74, None, "", "Cart", True),
    (
        "rust",
        "CartResult",
        "type",
        78,
        78,
        "pub type CartResult<T> = Result<T, String>",
        "Shorthand for cart results.",
        None,
        True,
    ),
]


@pytest.mark.parametrize(
    ("lang", "qualname", "kind", "start", "end", "signature", "doc", "parent", "exported"),
    KNOWN_SYMBOLS,
    ids=[f"{row[0]}:{row[1]}" for row in KNOWN_SYMBOLS],
)
def test_known_symbol(
    lang: str,
    qualname: str,
    kind: str,
    start: int,
    end: int,
    signature: str | None,
    doc: str,
    parent: str | None,
    exported: bool,
) -> None:
    sym = _symbol(_parse(lang), qualname)
    assert (sym.kind, sym.start_line, sym.end_line) == (kind, start, end)
    if signature is not None:
        assert sym.signature == signature
    assert sym.doc == doc
    assert sym.parent == parent
    assert sym.exported is exported
    assert sym.name == qualname.rsplit(".", 1)[-1]


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_every_symbol_sits_on_its_lines(lang: str) -> None:
    facts = _parse(lang)
    source = SAMPLES[lang].read_bytes()
    assert facts.line_count == len(source.decode().splitlines())
    assert facts.syntax_errors == 0
    assert len(facts.symbols) >= 5
    _check_invariants(facts, source)
    for sym in facts.symbols:
        if sym.parent is not None:
            assert sym.qualname == f"{sym.parent}.{sym.name}"


def test_nested_functions_are_not_symbols() -> None:
    facts = _parse("python")
    assert facts.symbol("Cart._audit") is not None
    assert all(s.name != "fmt" for s in facts.symbols)  # a helper inside _audit
    assert all(s.name != "existing" for s in _parse("javascript").symbols)


@pytest.mark.parametrize(
    ("lang", "doc_start", "header_end"),
    [
        ("python", "Shopping cart: items, totals and discounts.\n\nThe cart is", 17),
        ("javascript", "Shopping cart for the web shop.\nKeeps items", 12),
        ("typescript", "Shopping cart types and logic.", 8),
        ("tsx", "React views for the shopping cart.", 7),
        ("go", "Package cart implements the shopping cart used by checkout.\n\nCarts", 14),
        ("rust", "Shopping cart: items, totals and discounts.\n\nThe cart is", 13),
    ],
)
def test_module_doc_and_header(lang: str, doc_start: str, header_end: int) -> None:
    facts = _parse(lang)
    assert facts.doc.startswith(doc_start)
    assert facts.header_end == header_end


def test_module_doc_is_not_the_first_items_doc() -> None:
    src = b"/** Adds numbers. */\nexport function add(a, b) {\n  return a + b;\n}\n"
    facts = parse_module("a.js", src, "javascript")
    assert facts.doc == ""
    assert facts.header_end == 0
    assert _symbol(facts, "add").doc == "Adds numbers."


def test_license_header_is_not_a_module_doc() -> None:
    src = b"// Copyright 2024 Shop Inc. All rights reserved.\n\npackage cart\n\nfunc F() {}\n"
    facts = parse_module("cart.go", src, "go")
    assert facts.doc == ""
    assert facts.header_end == 0


def test_python_header_includes_type_checking_imports() -> None:
    src = (
        b'"""Doc."""\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n'
        b"    from .cart import Cart\n\nX = 1\n\ndef f():\n    import os\n"
    )
    facts = parse_module("m.py", src, "python")
    assert facts.header_end == 5
    assert [i.module for i in facts.imports] == ["typing", ".cart", "os"]


# --- imports ------------------------------------------------------------------------------

EXPECTED_IMPORTS = {
    "python": [
        ("logging", ()),
        ("os.path", ()),
        ("dataclasses", ("dataclass", "field")),
        (".", ("events",)),
        (".pricing", ("apply_discount", "round_price")),
    ],
    "javascript": [
        ("./pricing.js", ("applyDiscount", "roundPrice")),
        ("./events", ("*",)),
        ("../config/index.js", ("default",)),
        ("./format", ("formatPrice",)),
        ("path", ()),
        ("./io", ()),
    ],
    "typescript": [
        ("./pricing.js", ("applyDiscount", "roundPrice")),
        ("./money", ("Money",)),
        ("./events/index", ("*",)),
        ("lodash", ("default",)),
    ],
    "tsx": [
        ("react", ("default", "useState")),
        ("./cart", ("Cart", "Item")),
        ("../format", ("formatPrice",)),
    ],
    "go": [
        ("errors", ()),
        ("fmt", ()),
        ("example.com/shop/internal/pricing", ()),
        ("example.com/shop/events", ()),
        ("strings", ()),
    ],
    "rust": [
        ("std::collections", ("HashMap",)),
        ("std", ("fmt",)),
        ("crate::pricing", ("apply_discount", "round_price")),
        ("super::events", ("self", "Event")),
        ("self::store", ("Store",)),
        ("self::store", ()),
        ("self::audit", ()),
    ],
}


@pytest.mark.parametrize("lang", sorted(EXPECTED_IMPORTS))
def test_sample_imports(lang: str) -> None:
    facts = _parse(lang)
    assert [(i.module, i.names) for i in facts.imports] == EXPECTED_IMPORTS[lang]
    assert [i.line for i in facts.imports] == sorted(i.line for i in facts.imports)


@pytest.mark.parametrize(
    ("lang", "source", "expected"),
    [
        ("python", b"import a.b as c, d\n", [("a.b", ()), ("d", ())]),
        ("python", b"from ..p.q import (r as s, t)\n", [("..p.q", ("r", "t"))]),
        ("python", b"from m import *\n", [("m", ("*",))]),
        (
            "javascript",
            b'import "./side";\nexport * from "./all";\n',
            [("./side", ()), ("./all", ("*",))],
        ),
        ("javascript", b'const m = import("./lazy");\n', [("./lazy", ())]),
        (
            "typescript",
            b'import fs = require("fs");\nexport type { U } from "./u";\n',
            [("fs", ()), ("./u", ("U",))],
        ),
        ("go", b'package x\nimport ev "example.com/x/events"\n', [("example.com/x/events", ())]),
        (
            "rust",
            b"use crate::{x::{y, z as w, q::R}, v, u::*};\n",
            [
                ("crate", ("v",)),
                ("crate::u", ("*",)),
                ("crate::x", ("y", "z")),
                ("crate::x::q", ("R",)),
            ],
        ),
        (
            "rust",
            b"use a::b::*;\nuse foo as bar;\nmod m;\n",
            [("a::b", ("*",)), ("foo", ()), ("self::m", ())],
        ),
        ("rust", b"use crate::{a::{b, c}};\n", [("crate::a", ("b", "c"))]),
    ],
)
def test_import_forms(
    lang: str, source: bytes, expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    facts = parse_module("f", source, lang)
    assert [(i.module, i.names) for i in facts.imports] == expected


# --- references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "name", "line"),
    [
        ("python", "apply_discount", 53),
        ("python", "emit", 45),
        ("javascript", "readFileSync", 60),
        ("javascript", "Item", 61),  # new Item(...)
        ("typescript", "roundPrice", 57),
        ("tsx", "ItemRow", 36),  # <ItemRow .../>
        ("go", "ApplyDiscount", 69),
        ("go", "Emit", 57),
        ("rust", "apply_discount", 67),
        ("rust", "emit", 56),
    ],
)
def test_call_references(lang: str, name: str, line: int) -> None:
    assert Reference(name, line) in _parse(lang).references


def test_jsx_html_elements_are_not_calls() -> None:
    names = {r.name for r in _parse("tsx").references}
    assert "div" not in names and "li" not in names


def test_reference_objects_are_ordinary() -> None:
    ref = _parse("python").references[0]
    same = Reference(ref.name, ref.line)
    assert ref == same and hash(ref) == hash(same) and repr(ref) == repr(same)
    with pytest.raises(AttributeError):
        ref.name = "x"  # type: ignore[misc]


def test_facts_round_trip() -> None:
    for lang in SAMPLES:
        facts = _parse(lang)
        assert ModuleFacts.from_dict(facts.to_dict()) == facts


# --- per-language details -----------------------------------------------------------------


def test_rust_inline_module_and_trait_impl() -> None:
    src = (
        b"pub struct S;\nimpl Clone for S {\n    fn clone(&self) -> S { S }\n}\n"
        b"#[cfg(test)]\nmod tests {\n    use super::*;\n    fn helper() {}\n}\n"
        b"impl<T: Clone> Stack<T> {\n    pub(crate) fn push(&mut self) {}\n}\n"
    )
    facts = parse_module("lib.rs", src, "rust")
    assert _symbol(facts, "S.clone").exported
    helper = _symbol(facts, "tests.helper")
    assert (helper.kind, helper.parent, helper.exported) == ("function", None, False)
    assert _symbol(facts, "Stack.push").parent == "Stack"


def test_go_generic_receiver() -> None:
    src = b"package s\n\ntype Stack[T any] struct{ items []T }\n\nfunc (s *Stack[T]) Push(v T) {}\n"
    facts = parse_module("s.go", src, "go")
    assert _symbol(facts, "Stack").kind == "struct"
    assert _symbol(facts, "Stack.Push").parent == "Stack"


def test_ts_decorated_class_starts_at_its_name() -> None:
    src = b"@Component({})\nexport class Widget {\n  @Input() size = 1;\n  draw(): void {}\n}\n"
    facts = parse_module("w.ts", src, "typescript")
    widget = _symbol(facts, "Widget")
    assert widget.start_line == 2
    assert widget.signature == "class Widget"
    assert widget.exported


def test_commonjs_exports() -> None:
    src = (
        b"function a() {}\nfunction b() {}\nfunction c() {}\nfunction d() {}\n"
        b"module.exports = { a, bee: b };\nmodule.exports.c = c;\n"
    )
    facts = parse_module("m.js", src, "javascript")
    assert {s.name: s.exported for s in facts.symbols} == {
        "a": True,
        "b": True,
        "c": True,
        "d": False,
    }


def test_ts_namespace_members_are_qualified() -> None:
    src = b"export namespace Shop {\n  export function open() {}\n  function hidden() {}\n}\n"
    facts = parse_module("n.ts", src, "typescript")
    assert _symbol(facts, "Shop.open").exported
    assert not _symbol(facts, "Shop.hidden").exported
    assert _symbol(facts, "Shop.open").parent is None


def test_unknown_language_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_module("x.cob", b"", "cobol")


# --- robustness ---------------------------------------------------------------------------

BROKEN = {
    "python": b"def good():\n    return 1\n\nx = = 2\n\nclass Later:\n    def m(self): ...\n",
    "javascript": b"function good() { return 1 }\nlet x = = 2;\nclass Later { m() {} }\n",
    "typescript": b"function good(): number { return 1 }\nlet x = = 2;\nclass Later { m() {} }\n",
    "tsx": b"function good() { return <div/> }\nlet x = = 2;\nclass Later { m() {} }\n",
    "go": b"package p\n\nfunc good() int { return 1 }\n\nvar x = = 2\n\nfunc Later() {}\n",
    "rust": b"fn good() -> i32 { 1 }\nlet x = = 2;\npub fn later() {}\n",
}


@pytest.mark.parametrize("lang", sorted(BROKEN))
def test_syntax_errors_keep_what_parsed(lang: str) -> None:
    facts = parse_module("broken", BROKEN[lang], lang)
    assert facts.syntax_errors >= 1
    names = {s.name for s in facts.symbols}
    assert "good" in names
    assert {"Later", "later"} & names
    _check_invariants(facts, BROKEN[lang])


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_empty_file(lang: str) -> None:
    facts = parse_module("empty", b"", lang)
    assert facts == ModuleFacts(path="empty", lang=lang, line_count=0)
    blank = parse_module("blank", b"\n\n", lang)
    assert (blank.line_count, blank.symbols, blank.header_end) == (2, [], 0)


def test_invalid_utf8_and_crlf() -> None:
    src = b"def caf\xe9():\r\n    '''D\xffoc.'''\r\n    return 1\r\n"
    facts = parse_module("m.py", src, "python")
    assert facts.line_count == 3
    _check_invariants(facts, src)
    sym = facts.symbols[0]
    assert (sym.start_line, sym.end_line) == (1, 3)
    assert "\r" not in sym.signature and "\ufffd" in sym.doc


_FRAGMENTS = st.sampled_from(
    [
        b"def ",
        b"class ",
        b"fn ",
        b"func ",
        b"function ",
        b"impl ",
        b"import ",
        b"use ",
        b"(",
        b")",
        b"{",
        b"}",
        b":",
        b"\n",
        b"    ",
        b"x",
        b"A",
        b'"',
        b"'",
        b"/*",
        b"*/",
        b"//",
        b"#",
        b"=>",
        b"<div>",
        b"\xff",
        b"\xc3",
        b"pub ",
        b"export ",
        b"mod ",
        b";",
        b".",
        b"::",
    ]
)


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    lang=st.sampled_from(sorted(LANGUAGES)),
    data=st.one_of(st.binary(max_size=400), st.lists(_FRAGMENTS, max_size=60).map(b"".join)),
)
def test_never_raises(lang: str, data: bytes) -> None:
    facts = parse_module("fuzz", data, lang)
    _check_invariants_loose(facts)


def _check_invariants_loose(facts: ModuleFacts) -> None:
    """Like _check_invariants, without the name check (the name may be a replacement char)."""
    for sym in facts.symbols:
        assert 1 <= sym.start_line <= sym.end_line <= facts.line_count, sym
    for ref in facts.references:
        assert 1 <= ref.line <= facts.line_count
    for imp in facts.imports:
        assert 1 <= imp.line <= facts.line_count
    assert 0 <= facts.header_end <= facts.line_count


# --- resolve_import -----------------------------------------------------------------------

PY_PATHS = frozenset(
    [
        "shop/__init__.py",
        "shop/cart.py",
        "shop/pricing.py",
        "shop/events/__init__.py",
        "shop/events/bus.py",
        "src/lib/__init__.py",
        "src/lib/util.py",
        "tools/run.py",
        "tools/helper.py",
    ]
)
JS_PATHS = frozenset(
    [
        "web/cart.js",
        "web/pricing.ts",
        "web/events/index.ts",
        "web/format.tsx",
        "web/io.js",
        "config/index.js",
    ]
)
GO_PATHS = frozenset(
    [
        "cart/cart.go",
        "cart/cart_test.go",
        "internal/pricing/round.go",
        "internal/pricing/discount.go",
        "internal/pricing/discount_test.go",
        "main.go",
    ]
)
RS_PATHS = frozenset(
    [
        "src/lib.rs",
        "src/cart.rs",
        "src/cart/store.rs",
        "src/cart/audit/mod.rs",
        "src/pricing.rs",
        "src/events/mod.rs",
        "src/events/bus.rs",
    ]
)

RESOLVE_CASES = [
    ("python", "shop/cart.py", ".pricing", ("apply_discount",), PY_PATHS, ["shop/pricing.py"]),
    ("python", "shop/cart.py", ".", ("events",), PY_PATHS, ["shop/events/__init__.py"]),
    (
        "python",
        "shop/cart.py",
        ".",
        ("pricing", "VERSION"),
        PY_PATHS,
        ["shop/__init__.py", "shop/pricing.py"],
    ),
    ("python", "shop/events/bus.py", "..cart", ("Cart",), PY_PATHS, ["shop/cart.py"]),
    ("python", "shop/events/bus.py", "....too_far", (), PY_PATHS, []),
    ("python", "shop/cart.py", "shop.events", ("bus",), PY_PATHS, ["shop/events/bus.py"]),
    ("python", "shop/cart.py", "shop.events.bus", (), PY_PATHS, ["shop/events/bus.py"]),
    ("python", "tests/test_util.py", "lib.util", (), PY_PATHS, ["src/lib/util.py"]),  # src layout
    ("python", "tools/run.py", "helper", (), PY_PATHS, ["tools/helper.py"]),  # script dir
    ("python", "shop/cart.py", "os.path", (), PY_PATHS, []),
    ("javascript", "web/cart.js", "./pricing.js", (), JS_PATHS, ["web/pricing.ts"]),
    ("javascript", "web/cart.js", "./events", (), JS_PATHS, ["web/events/index.ts"]),
    ("javascript", "web/cart.js", "./io", (), JS_PATHS, ["web/io.js"]),
    ("tsx", "web/cart.js", "./format", (), JS_PATHS, ["web/format.tsx"]),
    ("typescript", "web/cart.js", "../config", (), JS_PATHS, ["config/index.js"]),
    ("typescript", "web/cart.js", "../config/index.js", (), JS_PATHS, ["config/index.js"]),
    ("javascript", "web/cart.js", "react", (), JS_PATHS, []),
    ("javascript", "web/cart.js", "../../outside", (), JS_PATHS, []),
    ("rust", "src/cart.rs", "self::store", (), RS_PATHS, ["src/cart/store.rs"]),  # mod store;
    ("rust", "src/cart.rs", "self::audit", (), RS_PATHS, ["src/cart/audit/mod.rs"]),
    ("rust", "src/lib.rs", "self::cart", (), RS_PATHS, ["src/cart.rs"]),
    ("rust", "src/events/mod.rs", "self::bus", (), RS_PATHS, ["src/events/bus.rs"]),
    ("rust", "src/cart.rs", "crate::pricing", ("round_price",), RS_PATHS, ["src/pricing.rs"]),
    ("rust", "src/cart.rs", "super::events", ("self", "Event"), RS_PATHS, ["src/events/mod.rs"]),
    ("rust", "src/cart.rs", "super::events", ("bus",), RS_PATHS, ["src/events/bus.rs"]),
    ("rust", "src/events/bus.rs", "super", ("Event",), RS_PATHS, ["src/events/mod.rs"]),
    ("rust", "src/cart/store.rs", "super::super::pricing", ("x",), RS_PATHS, ["src/pricing.rs"]),
    ("rust", "src/lib.rs", "crate::cart::store::Store", (), RS_PATHS, ["src/cart/store.rs"]),
    ("rust", "src/lib.rs", "cart", ("Cart",), RS_PATHS, ["src/cart.rs"]),  # 2018 relative path
    ("rust", "src/cart.rs", "std::collections", ("HashMap",), RS_PATHS, []),
]


@pytest.mark.parametrize(
    ("lang", "importer", "module", "names", "paths", "expected"),
    RESOLVE_CASES,
    ids=[f"{c[0]}:{c[1]}:{c[2]}" for c in RESOLVE_CASES],
)
def test_resolve_import(
    lang: str,
    importer: str,
    module: str,
    names: tuple[str, ...],
    paths: frozenset[str],
    expected: list[str],
) -> None:
    assert resolve_import(importer, lang, Import(module, names, 1), paths) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "example.com/shop/internal/pricing",
            ["internal/pricing/discount.go", "internal/pricing/round.go"],
        ),
        ("example.com/shop/cart", ["cart/cart.go"]),
        ("example.com/shop", ["main.go"]),
        ("fmt", []),
        ("example.com/shopping/x", []),
    ],
)
def test_resolve_go_import(spec: str, expected: list[str]) -> None:
    imp = Import(spec, (), 1)
    assert resolve_import("cart/cart.go", "go", imp, GO_PATHS, "example.com/shop") == expected
    assert resolve_import("cart/cart.go", "go", imp, GO_PATHS, None) == []


def test_resolve_go_module_in_subdirectory() -> None:
    paths = frozenset(["svc/go.mod", "svc/api/api.go", "svc/main.go"])
    imp = Import("example.com/svc/api", (), 1)
    assert resolve_import("svc/main.go", "go", imp, paths, "example.com/svc") == ["svc/api/api.go"]


def test_resolve_sample_imports_end_to_end() -> None:
    """Every relative import of the samples resolves inside a matching file layout."""
    facts = _parse("python")
    paths = frozenset(["shop/cart.py", "shop/pricing.py", "shop/events.py", "shop/__init__.py"])
    found = sorted(
        {p for imp in facts.imports for p in resolve_import("shop/cart.py", "python", imp, paths)}
    )
    assert found == ["shop/events.py", "shop/pricing.py"]

    facts = _parse("rust")
    paths = frozenset(
        [
            "src/lib.rs",
            "src/shop/cart.rs",
            "src/shop/cart/store.rs",
            "src/shop/cart/audit.rs",
            "src/shop/events.rs",
            "src/pricing.rs",
        ]
    )
    found = sorted(
        {p for imp in facts.imports for p in resolve_import("src/shop/cart.rs", "rust", imp, paths)}
    )
    assert found == [
        "src/pricing.rs",
        "src/shop/cart/audit.rs",
        "src/shop/cart/store.rs",
        "src/shop/events.rs",
    ]


def test_facts_round_trip_through_json_and_old_symbol_dicts_still_load() -> None:
    """``from_dict`` fills symbols straight from ``to_dict``'s dicts; a dict missing a field
    with a default (an older store) still loads through ``Symbol(**d)``, and an unknown
    field is an error, as it was."""
    import json

    import pytest

    from sleepy_repo.parse.facts import ModuleFacts, Symbol

    src = b'"""Doc."""\nclass Cart:\n    """A cart."""\n    def add(self, x):\n        return x\n'
    facts = parse_module("cart.py", src, "python")
    back = ModuleFacts.from_dict(json.loads(json.dumps(facts.to_dict())))
    assert back == facts and back.symbols and all(type(s) is Symbol for s in back.symbols)
    assert [hash(s) for s in back.symbols] == [hash(s) for s in facts.symbols]
    old = facts.to_dict()
    for s in old["symbols"]:
        del s["parent"], s["exported"]
    loaded = ModuleFacts.from_dict(old).symbols
    assert [(s.parent, s.exported) for s in loaded] == [(None, True)] * len(loaded)
    bad = facts.to_dict()
    bad["symbols"][0]["colour"] = "red"
    with pytest.raises(TypeError):
        ModuleFacts.from_dict(bad)
