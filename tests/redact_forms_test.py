"""Every secret form of issue 18 point 2, with values generated each run, is redacted in
what is sent (the Anthropic request) and in what is served (CLI ``context``, MCP
``context``, LSP ``sleepy/context`` and hover); a deny-listed file serves its path and its
symbols' names only (point 3).

The unit tests draw the values with hypothesis, so the rules cannot be fitted to known
strings; the channel tests plant values from ``secrets`` (new each run) in a real git repo
and read what a person or an agent would get."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_anthropic import FakeAnthropic
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from reliability_rpc import Server

from sleepy_repo import api
from sleepy_repo.redact import _char_classes, _wordy, entropy, redact

from helpers import CLI, EXE, git, trusted_config

ALNUM = string.ascii_letters + string.digits


# -- values ----------------------------------------------------------------------------------
def _mixed(min_size: int, max_size: int, extra: str = "") -> st.SearchStrategy[str]:
    """A value with a letter and a digit (what a password or key holds; a plain word or an
    all-x placeholder is not one)."""
    return st.text(alphabet=ALNUM + extra, min_size=min_size, max_size=max_size).filter(
        lambda v: any(c.isdigit() for c in v) and any(c.isalpha() for c in v)
    )


PASSWORD = _mixed(3, 24, "!@#%^&*-_+=")  # short ones too: "hunter2"
KEY = _mixed(20, 40).filter(lambda v: entropy(v) >= 3.5 and _char_classes(v) >= 2)
# a key of letters only (1 in 270 random 32-character keys); one that reads as words
# (``HTTPBasicAuthHandler``) is taken for an identifier, a known gap the filter states
LETTER_KEY = st.text(alphabet=string.ascii_letters, min_size=20, max_size=40).filter(
    lambda v: entropy(v) >= 3.5 and _char_classes(v) >= 2 and not _wordy(v)
)
WORD = st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=9)
PASSPHRASE = st.lists(WORD, min_size=3, max_size=5).map(" ".join)
GITLAB = st.text(alphabet=ALNUM + "_-", min_size=20, max_size=20).map(lambda v: "glpat-" + v)
HF = _mixed(34, 34).filter(lambda v: _char_classes(v) >= 2).map(lambda v: "hf_" + v)

# (form, template, values): ``{v}`` is the secret
FORMS: list[tuple[str, str, st.SearchStrategy[str]]] = [
    ("bytes value", 'API_KEY = b"{v}"', KEY),
    ("bytes password", "DB_PASSWORD = b'{v}'", PASSWORD),
    ("triple-quoted", 'SECRET_TOKEN = """{v}"""', KEY),
    ("letters-only key", 'SECRET_TOKEN = """{v}"""', LETTER_KEY),
    ("letters-only api key", 'API_KEY = "{v}"', LETTER_KEY),
    ("triple-quoted password", "password = '''{v}'''", PASSWORD),
    ("bearer header", 'headers = {{"Authorization": "Bearer {v}"}}', KEY),
    ("letters-only bearer", 'headers = {{"Authorization": "Bearer {v}"}}', LETTER_KEY),
    ("basic header", "req.headers['Authorization'] = 'Basic {v}'", KEY),
    ("environ setdefault", 'os.environ.setdefault("DB_PASSWORD", "{v}")', PASSWORD),
    ("environ item", 'os.environ["API_TOKEN"] = "{v}"', KEY),
    ("getenv default", 'token = os.getenv("GITHUB_TOKEN", "{v}")', KEY),
    ("letters-only getenv default", 'os.getenv("SECRET_KEY", "{v}")', LETTER_KEY),
    ("auth tuple", 'requests.get(url, auth=("admin", "{v}"))', PASSWORD),
    ("basic auth call", 'HTTPBasicAuth("admin", "{v}")', PASSWORD),
    ("name db_pass", 'db_pass = "{v}"', PASSWORD),
    ("name PASS", 'PASS = "{v}"', PASSWORD),
    ("name pw", "pw = '{v}'", PASSWORD),
    ("camel userPassword", 'const userPassword = "{v}";', PASSWORD),
    ("short password", 'password="{v}"', PASSWORD),
    ("passphrase", 'passphrase = "{v}"', PASSPHRASE),
    ("gitlab token", 'client = Gitlab(url, private_token_value="{v}")', GITLAB),
    ("bare gitlab token", "# {v}", GITLAB),
    ("bare huggingface token", "login({v})", HF),
    ("docstring password", '"""Log in. The admin password is {v} for now."""', PASSWORD),
    ("quoted docstring password", "    The default password is `{v}`.", PASSWORD),
    ("signature default", "def login(user, pw={v!r}, retries=3):", PASSWORD),
    ("bytes signature default", 'def login(user, token_default=b"{v}"):', KEY),
    ("yaml password", "  password: {v}", _mixed(8, 24, "!@#%")),
    ("go struct", '\tPassword: "{v}",', PASSWORD),
    ("rust typed let", 'let password: &str = "{v}";', PASSWORD),
    ("rust static str", 'const API_TOKEN: &\'static str = "{v}";', KEY),
    ("go typed var", 'var dbPassword string = "{v}"', PASSWORD),
    ("go typed const", 'const apiKey string = "{v}"', KEY),
    ("triple-quoted on its own line", 'SECRET_TOKEN = """\n{v}\n"""', KEY),
]


@pytest.mark.parametrize(("form", "template", "values"), FORMS, ids=[f[0] for f in FORMS])
def test_every_form_is_redacted_whatever_its_value(
    form: str, template: str, values: st.SearchStrategy[str]
) -> None:
    @settings(max_examples=60, deadline=None)
    @given(values)
    def check(value: str) -> None:
        line = template.format(v=value)
        out = redact(f"import os\n\n{line}\nprint('done')\n").text
        assert value not in out, (form, line, out)
        assert "[REDACTED:" in out, (form, line, out)
        assert out.startswith("import os\n\n") and out.endswith("\nprint('done')\n")

    check()


@pytest.mark.parametrize(
    "line",
    [
        'parser.add_argument("--password", help="the password")',
        'password = f"{prefix}{suffix}"',
        "def connect(host, password: str, timeout: float = 3.0):",
        "    password: the user's password",
        "The password is required.",
        "bypass = 'yes'",
        'compass = "north"',
        'PASSWORD_ENV = "DB_PASSWORD"',
        'password_hint = "ask the admin for it"',
        "auth = HTTPBasicAuth(user, password)",
        "Authorization: Bearer token",
        'x = "Basic authentication"',
        "if pw == password:",
        'password = request.form["password"]',
        'password = ""',
        "password=None",
        'kwargs.get("password", None)',
        'password = "********"',
        'password = "<your password>"',
        'password = "${DB_PASSWORD}"',
        "pass",
        "        pass  # nothing to do",
        "upward = move(pw_hash)",
        'headers["Authorization"] = f"Bearer {token}"',
        'return {"Authorization": "Bearer " + self.token}',
        "password_field = 'password'",
        # seen on real repositories before these cases were written (pallets/click, httpx)
        '@click.option("--password", prompt=True, hide_input=True)',
        'click.prompt("Pw", hide_input=True)',
        "This covers basic single-option default type coercion.",
        "token = b64encode(userpass).decode()",
        "username=auth_info[0], password=auth_info[2]",
        'SENSITIVE_HEADERS = {"authorization", "proxy-authorization"}',
        "- Authentication: 'advanced/authentication.md'",
        'authors = ["Alice", "Bob"]',  # found by review
    ],
)
def test_ordinary_code_about_passwords_is_left_alone(line: str) -> None:
    assert redact(line).text == line


# -- through every channel -------------------------------------------------------------------
def _password() -> str:
    return secrets.choice(string.ascii_letters) + secrets.choice(string.digits) + _tok(6)


def _tok(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _key() -> str:
    while True:
        v = _tok(32)
        if entropy(v) >= 3.5 and _char_classes(v) >= 2:
            return v


PLANTED: list[tuple[str, Callable[[], str], str]] = [
    ("bytes value", _key, 'API_KEY = b"{v}"'),
    ("triple-quoted", _key, 'SECRET_TOKEN = """{v}"""'),
    ("bearer header", _key, 'HEADERS = {{"Authorization": "Bearer {v}"}}'),
    ("environ setdefault", _password, 'os.environ.setdefault("DB_PASSWORD", "{v}")'),
    ("auth tuple", _password, 'AUTH = ("admin", "{v}")\nSESSION_AUTH = auth=("admin", "{v}")'),
    ("name db_pass", _password, 'db_pass = "{v}"'),
    ("name PASS", _password, 'PASS = "{v}"'),
    ("name pw", _password, 'pw = "{v}"'),
    ("short password", lambda: "h" + _tok(1, string.digits) + _tok(3), 'password = "{v}"'),
    ("passphrase", lambda: " ".join(_tok(6, string.ascii_lowercase) for _ in range(4)),
     'passphrase = "{v}"'),
    ("gitlab token", lambda: "glpat-" + _tok(20), 'GITLAB = "{v}"'),
    ("huggingface token", lambda: "hf_" + _key()[:34].ljust(34, "Q"), 'HF = "{v}"'),
]  # fmt: skip


def _planted_repo(make_repo: Any) -> tuple[Path, dict[str, str]]:
    repo = make_repo("shop")
    values: dict[str, str] = {}
    lines = ['"""Connection settings for the payment gateway."""', "import os", ""]
    for form, make, template in PLANTED:
        values[form] = make()
        lines.append(template.format(v=values[form]))
    pw = _password()
    values["docstring password"] = pw
    lines += [
        "",
        "",
        "def connect_gateway(host):",
        f'    """Connect to the payment gateway. The admin password is {pw} for now."""',
        "    return host",
        "",
    ]
    (repo / "shop" / "gateway.py").write_text("\n".join(lines))
    # deny-listed (``*credentials*``): its path and its symbols' names only
    values["denied default"] = _password()
    values["denied bytes default"] = _key()
    values["denied docstring"] = "DENIEDDOC" + _tok(12)
    (repo / "shop" / "credentials.py").write_text(
        f'"""Admin logins. {values["denied docstring"]}"""\n\n\n'
        f'def login(user, pw="{values["denied default"]}", '
        f'token_default=b"{values["denied bytes default"]}"):\n'
        f'    """Log the user in ({values["denied docstring"]})."""\n'
        "    return user\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "gateway")
    return repo, values


def _leaks(values: dict[str, str], outputs: dict[str, str]) -> list[str]:
    return [
        f"{form} in {where}"
        for where, text in outputs.items()
        for form, value in values.items()
        if value in text
    ]


QUESTIONS = (
    "how does the payment gateway connect, which password and token",
    "admin login credentials user password token default",
)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    yield server
    server.close()


def test_planted_secrets_reach_neither_the_model_nor_any_served_channel(
    make_repo: Any, cli: CLI, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert EXE
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    repo, values = _planted_repo(make_repo)
    trusted_config(
        repo,
        f'[notes]\ncommit = true\n[anthropic]\nbase_url = "{fake.url}"\nmax_retries = 1\n'
        "timeout = 5.0\nconcurrency = 1\n",
    )
    outputs: dict[str, str] = {}

    # sent: the model's requests (the real SDK against the fake server)
    refresh = cli.run("refresh", "--backend", "anthropic", "--json", repo=repo)
    outputs["refresh output"] = refresh.stdout + refresh.stderr
    sent = [r.user_text for r in fake.message_requests if r.module == "shop/gateway.py"]
    assert sent and "def connect_gateway(host):" in sent[0], "the ordinary code was sent"
    outputs["anthropic requests"] = "\n".join(
        r.body.decode("utf-8", "replace") for r in fake.requests
    )

    # served: CLI, MCP, LSP; the mirror the hook writes
    for q in QUESTIONS:
        ctx = cli.json("context", q, "--budget", "8000", repo=repo)
        outputs[f"cli context {q}"] = json.dumps(ctx)
        if q == QUESTIONS[0]:
            code = [
                i for i in ctx["items"] if i["path"] == "shop/gateway.py" and i["kind"] == "code"
            ]
            assert code and any("[REDACTED:" in i["text"] for i in code), ctx["items"]
    for path in ("shop/gateway.py", "shop/credentials.py"):
        outputs[f"cli notes {path}"] = cli.run("notes", path, "--json", repo=repo).stdout
    hook = cli.run("hook", "pre-commit", "shop/gateway.py", "shop/credentials.py", repo=repo)
    outputs["hook"] = hook.stdout + hook.stderr
    for mirror in (repo / ".sleepy").rglob("*.md"):
        outputs[f"mirror {mirror.name}"] = mirror.read_text()

    async def mcp() -> list[str]:
        params = StdioServerParameters(command=EXE, args=["mcp", "--repo", str(repo)], cwd="/")
        out = []
        async with Client(params, read_timeout_seconds=120) as client:
            for q in QUESTIONS:
                c = await client.call_tool("context", {"question": q, "budget": 8000})
                out.append(json.dumps(c.structured_content))
            for path in ("shop/gateway.py", "shop/credentials.py"):
                n = await client.call_tool("module_notes", {"path": path})
                out.append(json.dumps(n.structured_content))
        return out

    outputs["mcp"] = "\n".join(anyio.run(mcp))

    srv = Server(tmp_path / "lsp.log")
    try:
        srv.initialize(repo)
        replies = []
        for rel in ("shop/gateway.py", "shop/credentials.py"):
            uri = (repo / rel).as_uri()
            text = (repo / rel).read_text()
            srv.notify(
                "textDocument/didOpen",
                {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
            )
            for line in range(len(text.splitlines())):
                replies.append(
                    srv.request(
                        "textDocument/hover",
                        {"textDocument": {"uri": uri}, "position": {"line": line, "character": 6}},
                    )
                )
        for q in QUESTIONS:
            replies.append(srv.request("sleepy/context", {"question": q, "budget": 8000}))
        outputs["lsp"] = json.dumps(replies)
        assert "login" in outputs["lsp"], "the deny-listed file's symbol names are served"
    finally:
        assert srv.close() == 0

    assert _leaks(values, outputs) == []
    # the deny-listed module: not sent, its names known, its signature and docstring not
    assert not any("shop/credentials.py" in r.user_text for r in fake.message_requests)
    assert "login" in outputs["cli notes shop/credentials.py"]
    print(f"\nplanted {len(values)} secrets x {len(outputs)} outputs: 0 leaked")


def test_a_module_deny_listed_later_loses_its_signatures_and_docstrings(
    make_repo: Any, cli: CLI
) -> None:
    """A store indexed before a file was deny-listed re-parses it when the deny list
    changes: its defaults and docstrings leave the store, its names stay."""
    repo = make_repo("shop")
    doc, default = "VAULTDOC" + _tok(12), _password()
    (repo / "shop" / "vault.py").write_text(
        f'def unlock(user, pw="{default}"):\n    """Open the vault ({doc})."""\n    return user\n'
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "vault")
    cli.run("refresh", repo=repo)
    before = cli.run("notes", "shop/vault.py", "--json", repo=repo).stdout
    assert doc in before  # not deny-listed yet: its docstring is a note

    (repo / ".sleepy" / "config.toml").write_text('[scan]\ndeny = ["shop/vault.py"]\n')
    cli.run("refresh", repo=repo)
    served = cli.run("notes", "shop/vault.py", "--json", repo=repo).stdout
    served += cli.run("context", "unlock the vault", "--json", "--budget", "4000", repo=repo).stdout
    assert doc not in served and default not in served
    assert "unlock" in served


def test_a_deny_listed_modules_code_is_not_indexed_or_embedded(make_repo: Any, cli: CLI) -> None:
    """A deny-listed module's code is kept out of the code index and the semantic index, not
    only out of what is served: a search for a word of its body finds nothing there."""
    repo = make_repo("shop")
    word = "zorblax" + _tok(8, string.ascii_lowercase)
    (repo / "shop" / "credentials.py").write_text(
        f"def rotate(vault):\n    # {word} rotation\n    return vault.{word}()\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "credentials")
    cli.run("refresh", repo=repo)
    with api.open_repo(repo).store.read() as conn:
        chunks = conn.execute(
            "SELECT count(*) FROM chunks WHERE path = 'shop/credentials.py'"
        ).fetchone()[0]
        found = conn.execute(
            "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (word,)
        ).fetchone()[0]
        embedded = conn.execute(  # a row of no vectors says it was looked at
            "SELECT count(*) FROM embeddings WHERE path = 'shop/credentials.py' "
            "AND (spans != '[]' OR length(vectors) > 0)"
        ).fetchone()[0]
    assert (chunks, found, embedded) == (0, 0, 0)
    ctx = cli.json("context", f"rotate {word}", repo=repo)
    assert word not in json.dumps(ctx["items"])
    assert "rotate" in cli.run("notes", "shop/credentials.py", repo=repo).stdout


def test_the_hook_and_the_mirror_never_bring_a_deny_listed_modules_docstrings_back(
    make_repo: Any, cli: CLI
) -> None:
    """The pre-commit hook notes a staged deny-listed module from its names only, and a
    mirror committed before the file was deny-listed is not imported (found by review)."""
    repo = make_repo("shop")
    doc, default = "VAULTDOC" + _tok(12), _password()
    vault = repo / "shop" / "vault.py"
    vault.write_text(f'def unlock(user, pw="{default}"):\n    """Open it ({doc})."""\n')
    trusted_config(repo, "[notes]\ncommit = true\n")
    cli.run("refresh", repo=repo)
    git(repo, "add", "-A")
    cli.run("hook", "pre-commit", "shop/vault.py", repo=repo)  # writes the mirror
    assert doc in (repo / ".sleepy" / "notes" / "shop" / "vault.py.md").read_text()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "vault and its mirror, written before the deny list")

    config = (repo / ".sleepy" / "config.toml").read_text()
    trusted_config(repo, config + '[scan]\ndeny = ["shop/vault.py"]\n')
    cli.run("refresh", repo=repo)
    assert doc not in cli.run("notes", "shop/vault.py", "--json", repo=repo).stdout
    vault.write_text(vault.read_text() + "\n\ndef lock(user):\n    return user\n")
    git(repo, "add", "shop/vault.py")
    cli.run("hook", "pre-commit", "shop/vault.py", repo=repo)
    cli.run("refresh", repo=repo)
    served = cli.run("notes", "shop/vault.py", "--json", repo=repo).stdout
    assert doc not in served and default not in served
    assert "unlock" in served and "lock" in served
