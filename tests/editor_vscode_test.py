"""The VS Code extension in ``lsp/vscode``: it installs from its lock file, compiles with
``tsc --strict`` and packs into a ``.vsix`` (in a temp copy; the checkout stays clean), and its
palette command ids agree with ``package.json`` and stay clear of the ``sleepy.*`` ids that
the real server advertises (vscode-languageclient registers those itself)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, client_capabilities

from helpers import CLI, EXE, ROOT

EXTENSION = ROOT / "lsp" / "vscode"
NPM = shutil.which("npm")
NPX = shutil.which("npx")
# the developer's npm cache (tests get a fresh HOME, which would mean a cold cache)
NPM_CACHE = os.environ.get("NPM_CONFIG_CACHE") or str(Path.home() / ".npm")
SERVER_COMMANDS = {"sleepy.ask", "sleepy.refresh", "sleepy.status"}


def _need_npm() -> None:
    if NPM and NPX:
        return
    if os.environ.get("CI"):
        pytest.fail("npm/npx are not installed (CI is set; apt-get install npm)")
    pytest.skip("npm/npx are not installed (apt-get install npm)")


def _npm(*args: str, cwd: Path, timeout: float = 180) -> str:
    proc = subprocess.run(
        list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NPM_CONFIG_CACHE": NPM_CACHE, "NPM_CONFIG_UPDATE_NOTIFIER": "false"},
    )
    cmd = " ".join(args)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _package() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXTENSION / "package.json").read_text())
    return data


def _source() -> str:
    return (EXTENSION / "src" / "extension.ts").read_text()


@pytest.fixture
def shop(make_repo, cli: CLI) -> Path:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    return repo


RENDER = """
const { render } = require(process.argv[2]);
const data = JSON.parse(require("fs").readFileSync(process.argv[3], "utf8"));
process.stdout.write(render(data));
"""


def test_extension_compiles_strict_packs_a_vsix_and_renders(
    tmp_path: Path, shop: Path, cli: CLI
) -> None:
    _need_npm()
    work = tmp_path / "vscode"
    shutil.copytree(EXTENSION, work, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    assert NPM and NPX
    _npm(NPM, "ci", "--no-audit", "--no-fund", cwd=work)
    _npm(NPX, "--no-install", "tsc", "--strict", "-p", ".", cwd=work)
    assert (work / "out" / "extension.js").is_file()
    _npm(
        NPX,
        "--no-install",
        "vsce",
        "package",
        "--allow-missing-repository",
        "-o",
        "sleepy-repo.vsix",
        cwd=work,
    )
    vsix = work / "sleepy-repo.vsix"
    assert vsix.is_file()
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("extension/package.json"))
    assert {"extension/out/extension.js", "extension/out/render.js"} <= names
    assert "extension/node_modules/vscode-languageclient/package.json" in names
    assert not any(n.startswith("extension/src/") for n in names)
    assert manifest["main"] == "./out/extension.js"
    assert manifest["license"] == "MIT"

    # the compiled renderer on what the server's commands return (the CLI's same JSON)
    question = "How are coupon discounts applied before VAT?"
    script = work / "render.js"
    script.write_text(RENDER)
    shown = {}
    for name, args in {
        "ask": ("ask", question),
        "context": ("context", question, "--budget", "400"),
        "notes": ("notes", "shop/pricing.py"),
    }.items():
        data = tmp_path / f"{name}.json"
        data.write_text(cli.run(*args, "--json", repo=shop).stdout)
        shown[name] = _npm(
            "node", str(script), str(work / "out" / "render.js"), str(data), cwd=work
        )
    assert "## Context (" in shown["ask"] and "of 1500 tokens)" in shown["ask"]
    assert "- shop/pricing.py:75-102 · price_cart (" in shown["ask"]
    assert shown["context"].startswith("## Context (") and "of 400 tokens)" in shown["context"]
    assert shown["notes"].startswith("# shop/pricing.py\n\n## static")
    assert "(qa): Q: What does shop/pricing.py export?" in shown["notes"]


def test_palette_ids_match_package_json_and_not_the_servers() -> None:
    declared = {c["command"] for c in _package()["contributes"]["commands"]}
    registered = set(re.findall(r"registerCommand\(\s*\"([^\"]+)\"", _source()))
    assert declared == registered == {"sleepyRepo.ask", "sleepyRepo.refresh", "sleepyRepo.status"}
    assert not any(c.startswith("sleepy.") for c in declared)


def test_settings_are_the_documented_ones() -> None:
    properties = _package()["contributes"]["configuration"]["properties"]
    assert set(properties) == {"sleepyRepo.path", "sleepyRepo.backend", "sleepyRepo.idleSeconds"}
    # the extension reads each of them, and sends two as initializationOptions
    source = _source()
    read = set(re.findall(r"config\.get<\w+>\(\s*\"(\w+)\"", source))
    assert {f"sleepyRepo.{key}" for key in read} == set(properties)
    assert "options.backend = " in source and "options.idleSeconds = " in source


async def test_forwarded_ids_are_what_the_server_advertises(shop: Path) -> None:
    forwarded = dict(re.findall(r"\"(sleepyRepo\.\w+)\":\s*\"(sleepy\.\w+)\"", _source()))
    assert set(forwarded) == {c["command"] for c in _package()["contributes"]["commands"]}
    assert EXE
    client = await ClientServerConfig(server_command=[EXE, "lsp", "--repo", str(shop)]).start()
    try:
        result = await client.initialize_session(
            types.InitializeParams(
                capabilities=client_capabilities("visual-studio-code"),
                root_uri=shop.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=shop.as_uri(), name="shop")],
                initialization_options={"backend": "static", "idleSeconds": 30},
            )
        )
        provider = result.capabilities.execute_command_provider
        assert provider is not None
        advertised = set(provider.commands)
        assert set(forwarded.values()) == SERVER_COMMANDS
        assert advertised >= SERVER_COMMANDS
        # what the palette commands send reaches the server and comes back
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=forwarded["sleepyRepo.status"], arguments=[])
        )
        assert status
    finally:
        await client.shutdown_session()
