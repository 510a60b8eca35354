"""The Neovim plugin in ``lsp/nvim``, driven by a real headless Neovim (Debian's 0.7.2 in CI):
``setup()`` starts ``sleepy-repo lsp`` for a fixture repo's buffer, then hover,
``:SleepyStatus``, ``:SleepyAsk`` and the ``sleepy/context`` request go through the plugin's
client, and the driver writes what arrived to a JSON file the test reads.

Set ``SLEEPY_TEST_NVIM`` to run another ``nvim`` binary (e.g. 0.11, which takes the
``vim.lsp.config`` path of the plugin)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import CLI, EXE, ROOT

PLUGIN = ROOT / "lsp" / "nvim"
NVIM = os.environ.get("SLEEPY_TEST_NVIM") or shutil.which("nvim")

if NVIM is None:
    if os.environ.get("CI"):
        raise RuntimeError("nvim is not installed (CI is set; apt-get install neovim)")
    pytest.skip("nvim is not installed (apt-get install neovim)", allow_module_level=True)

# Runs inside Neovim: everything it learns goes to the JSON file at $SLEEPY_OUT; any error
# is recorded there too, and Neovim always quits.
DRIVER = r"""
local out_path = os.getenv("SLEEPY_OUT")
local results = { errors = {} }

local function save()
  local f = assert(io.open(out_path, "w"))
  f:write(vim.fn.json_encode(results))
  f:close()
end

local function clients(bufnr)
  local found = {}
  local all = vim.lsp.get_clients and vim.lsp.get_clients({ bufnr = bufnr })
    or vim.tbl_values(vim.lsp.buf_get_clients(bufnr))
  for _, c in ipairs(all) do
    if c.name == "sleepy_repo" then
      table.insert(found, c)
    end
  end
  return found
end

local function lines_of(name)
  local bufnr = vim.fn.bufnr(name)
  if bufnr == -1 then
    return nil
  end
  local lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  if #lines == 1 and lines[1] == "" then
    return nil
  end
  return lines
end

local function run()
  vim.opt.runtimepath:prepend(os.getenv("SLEEPY_PLUGIN"))
  local sleepy = require("sleepy_repo")
  sleepy.setup({ cmd = { os.getenv("SLEEPY_EXE"), "lsp" }, backend = "static", idle_seconds = 45 })
  results.version = tostring(vim.version().major) .. "." .. tostring(vim.version().minor)

  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("SLEEPY_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  results.filetype = vim.bo[bufnr].filetype
  results.found_root = sleepy.find_root(vim.api.nvim_buf_get_name(bufnr))

  local ready = vim.wait(60000, function()
    local c = clients(bufnr)[1]
    return c ~= nil and c.initialized ~= false and not (c.is_stopped and c.is_stopped())
  end, 50)
  results.attached = ready
  if not ready then
    return
  end
  local client = clients(bufnr)[1]
  results.root_dir = client.config.root_dir
  results.init_options = client.config.init_options
  results.commands = (client.server_capabilities or client.resolved_capabilities or {})
    .executeCommandProvider

  local line = tonumber(os.getenv("SLEEPY_LINE"))
  local col = tonumber(os.getenv("SLEEPY_COL"))
  local replies = vim.lsp.buf_request_sync(bufnr, "textDocument/hover", {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = line, character = col },
  }, 60000)
  for _, reply in pairs(replies or {}) do
    results.hover = reply.result
    results.hover_error = (reply.err or reply.error) and vim.inspect(reply.err or reply.error)
  end

  replies = vim.lsp.buf_request_sync(bufnr, "textDocument/codeLens", {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
  }, 60000)
  for _, reply in pairs(replies or {}) do
    results.lenses = reply.result
    results.lens_error = (reply.err or reply.error) and vim.inspect(reply.err or reply.error)
  end
  -- a lens's command, run the way vim.lsp.codelens.run runs it: the plugin's handler
  local lens = results.lenses and results.lenses[1]
  if lens and lens.command then
    client.commands[lens.command.command](lens.command, { bufnr = bufnr, client_id = client.id })
    vim.wait(60000, function() return lines_of("sleepy-repo://notes") ~= nil end, 50)
    results.notes = lines_of("sleepy-repo://notes")
  end

  vim.cmd("SleepyStatus")
  vim.wait(60000, function() return lines_of("sleepy-repo://status") ~= nil end, 50)
  results.status = lines_of("sleepy-repo://status")

  vim.cmd("SleepyAsk " .. os.getenv("SLEEPY_QUESTION"))
  vim.wait(60000, function() return lines_of("sleepy-repo://ask") ~= nil end, 50)
  results.ask = lines_of("sleepy-repo://ask")

  local done = false
  sleepy.context(os.getenv("SLEEPY_QUESTION"), 400, function(err, result)
    results.context = result
    results.context_error = err
    done = true
  end)
  vim.wait(60000, function() return done end, 50)
end

local ok, err = xpcall(run, debug.traceback)
if not ok then
  table.insert(results.errors, err)
end
save()
vim.cmd("qall!")
"""

QUESTION = "How are coupon discounts applied before VAT?"


def _drive(tmp_path: Path, repo: Path, file: str, symbol: str) -> dict[str, Any]:
    path = repo / file
    text = path.read_text().splitlines()
    line = next(i for i, s in enumerate(text) if f"def {symbol}(" in s or f"class {symbol}" in s)
    col = text[line].index(symbol) + 1
    driver = tmp_path / "driver.lua"
    driver.write_text(DRIVER)
    out = tmp_path / "nvim-out.json"
    assert NVIM and EXE
    env = {
        **os.environ,
        "SLEEPY_OUT": str(out),
        "SLEEPY_PLUGIN": str(PLUGIN),
        "SLEEPY_EXE": EXE,
        "SLEEPY_FILE": str(path),
        "SLEEPY_LINE": str(line),
        "SLEEPY_COL": str(col),
        "SLEEPY_QUESTION": QUESTION,
    }
    proc = subprocess.run(
        [NVIM, "--clean", "--headless", "-n", "-i", "NONE", "-c", f"luafile {driver}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.exists(), f"nvim wrote nothing (exit {proc.returncode}):\n{proc.stderr}"
    results: dict[str, Any] = json.loads(out.read_text())
    assert results["errors"] == [], results["errors"]
    return results


def _hover_text(hover: Any) -> str:
    """The hover's markdown with backslash escapes removed."""
    contents = hover["contents"]
    if isinstance(contents, dict):
        text = str(contents["value"])
    elif isinstance(contents, list):
        text = "\n".join(c if isinstance(c, str) else c["value"] for c in contents)
    else:
        text = str(contents)
    return re.sub(r"\\(.)", r"\1", text)


@pytest.fixture
def shop(make_repo, cli: CLI) -> Path:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    return repo


def test_plugin_hover_commands_and_context(tmp_path: Path, shop: Path) -> None:
    results = _drive(tmp_path, shop, "shop/pricing.py", "price_cart")
    assert results["filetype"] == "python"
    assert Path(results["found_root"]) == shop
    assert results["attached"], "the plugin did not start and attach the server"
    assert Path(results["root_dir"]) == shop
    assert results["init_options"] == {"backend": "static", "idleSeconds": 45}
    assert results["commands"] and set(results["commands"]["commands"]) >= {
        "sleepy.ask",
        "sleepy.refresh",
        "sleepy.status",
    }

    assert results.get("hover_error") is None, results["hover_error"]
    hover = _hover_text(results["hover"])
    assert "price_cart" in hover
    assert "shop/pricing.py:" in hover  # a path:line citation

    assert results.get("lens_error") is None, results["lens_error"]
    titles = [lens["command"]["title"] for lens in results["lenses"]]
    assert titles and all("notes" in t for t in titles), titles
    assert results["lenses"][0]["range"]["start"]["line"] == 0  # the module's lens
    notes = "\n".join(results["notes"])
    assert notes.startswith("# shop/pricing.py")
    assert "- shop/pricing.py:75-102 · price_cart (symbol): function price_cart: def " in notes
    assert "(qa): Q: What does shop/pricing.py export? shop/pricing.py exports" in notes

    status = "\n".join(results["status"])
    assert "modules" in status

    ask = "\n".join(results["ask"])
    assert "\n## Context (" in ask
    assert "- shop/pricing.py:75-102 · price_cart (" in ask

    assert results.get("context_error") is None, results["context_error"]
    context = results["context"]
    assert context["schema_version"] == 1
    assert context["question"] == QUESTION
    assert context["budget"] == 400
    assert context["items"], "no context items"
    assert {"path", "start_line", "text", "citations"} <= set(context["items"][0])
    assert any(item["path"] == "shop/pricing.py" for item in context["items"])


def test_no_server_outside_a_git_repository(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "mod.py").write_text("def f():\n    return 1\n")
    driver = tmp_path / "driver.lua"
    out = tmp_path / "out.json"
    driver.write_text(
        'vim.opt.runtimepath:prepend(os.getenv("SLEEPY_PLUGIN"))\n'
        'local s = require("sleepy_repo")\n'
        's.setup({ cmd = { "sleepy-repo-does-not-exist", "lsp" } })\n'
        'vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("SLEEPY_FILE")))\n'
        "vim.wait(300)\n"
        "local n = 0\n"
        "for _, c in pairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do\n"
        "  n = n + 1\n"
        "end\n"
        'local f = io.open(os.getenv("SLEEPY_OUT"), "w")\n'
        'f:write(vim.fn.json_encode({ root = s.find_root(vim.fn.expand("%:p")) or vim.NIL,'
        " clients = n }))\n"
        "f:close()\n"
        'vim.cmd("qall!")\n'
    )
    env = {
        **os.environ,
        "SLEEPY_OUT": str(out),
        "SLEEPY_PLUGIN": str(PLUGIN),
        "SLEEPY_FILE": str(loose / "mod.py"),
    }
    assert NVIM
    proc = subprocess.run(
        [NVIM, "--clean", "--headless", "-n", "-i", "NONE", "-c", f"luafile {driver}"],
        cwd=loose,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.exists(), proc.stderr
    assert json.loads(out.read_text()) == {"root": None, "clients": 0}
