"""The Emacs package in ``lsp/emacs``, driven by a real Emacs in batch mode with eglot
(Debian 12: Emacs 28 and ``elpa-eglot`` 1.9): ``sleepy-repo-start`` connects ``sleepy-repo
lsp`` to a fixture repo's buffer, then ``:textDocument/hover``, ``M-x sleepy-repo-status``,
``M-x sleepy-repo-ask`` and ``sleepy-repo-context`` go through that connection; the driver
writes what arrived to a JSON file the test reads."""

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

PACKAGE = ROOT / "lsp" / "emacs"
EMACS = os.environ.get("SLEEPY_TEST_EMACS") or shutil.which("emacs")


def _has_eglot(emacs: str) -> bool:
    proc = subprocess.run(
        [emacs, "--batch", "--eval", "(kill-emacs (if (require 'eglot nil t) 0 1))"],
        capture_output=True,
        timeout=60,
    )
    return proc.returncode == 0


MISSING = (
    "emacs is not installed (apt-get install emacs-nox elpa-eglot)"
    if EMACS is None
    else None
    if _has_eglot(EMACS)
    else "eglot is not available to emacs (apt-get install elpa-eglot)"
)
if MISSING:
    if os.environ.get("CI"):
        raise RuntimeError(f"{MISSING}; CI is set")
    pytest.skip(MISSING, allow_module_level=True)

# Runs inside Emacs: what it learns goes to the JSON file $SLEEPY_OUT, errors included; it
# always exits.
DRIVER = r"""
(require 'json)
(defvar sleepy-test-results (list :errors []))
(defun sleepy-test-put (key value)
  (setq sleepy-test-results (plist-put sleepy-test-results key value)))
(defun sleepy-test-buffer-text (name)
  (when (get-buffer name)
    (with-current-buffer name (buffer-substring-no-properties (point-min) (point-max)))))

(condition-case err
    (progn
      (add-to-list 'load-path (getenv "SLEEPY_PACKAGE"))
      (require 'sleepy-repo)
      (setq sleepy-repo-executable (getenv "SLEEPY_EXE")
            eglot-sync-connect t
            eglot-connect-timeout 120
            sleepy-repo-request-timeout 120
            sleepy-repo-backend "static"
            sleepy-repo-idle-seconds 45)
      (sleepy-test-put :eglot (or (and (boundp 'eglot-version) eglot-version)
                                  (let ((lib (locate-library "eglot"))) lib)))
      (find-file (getenv "SLEEPY_FILE"))
      (sleepy-test-put :mode (symbol-name major-mode))
      (sleepy-repo-start)
      (let ((server (eglot-current-server)))
        (sleepy-test-put :server_class (symbol-name (eieio-object-class server)))
        (sleepy-test-put :root (project-root (eglot--project server)))
        (sleepy-test-put :init_options (eglot-initialization-options server))
        (sleepy-test-put :commands
                         (plist-get (plist-get (eglot--capabilities server)
                                               :executeCommandProvider)
                                    :commands))
        (goto-char (point-min))
        (forward-line (string-to-number (getenv "SLEEPY_LINE")))
        (forward-char (string-to-number (getenv "SLEEPY_COL")))
        (sleepy-test-put :hover
                         (jsonrpc-request server :textDocument/hover
                                          (eglot--TextDocumentPositionParams)
                                          :timeout 120)))
      (sleepy-repo-notes)
      (sleepy-test-put :notes (sleepy-test-buffer-text "*sleepy-repo*"))
      (sleepy-repo-status)
      (sleepy-test-put :status (sleepy-test-buffer-text "*sleepy-repo*"))
      (sleepy-repo-ask (getenv "SLEEPY_QUESTION"))
      (sleepy-test-put :ask (sleepy-test-buffer-text "*sleepy-repo*"))
      (sleepy-test-put :context (sleepy-repo-context (getenv "SLEEPY_QUESTION") 400))
      (eglot-shutdown (eglot-current-server)))
  (error (sleepy-test-put :errors (vector (format "%S" err)))))

(with-temp-file (getenv "SLEEPY_OUT")
  (insert (let ((json-false :json-false) (json-null nil))
            (json-encode sleepy-test-results))))
(kill-emacs 0)
"""

QUESTION = "How are coupon discounts applied before VAT?"


@pytest.fixture
def shop(make_repo, cli: CLI) -> Path:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    return repo


def _drive(tmp_path: Path, repo: Path, file: str, symbol: str) -> dict[str, Any]:
    path = repo / file
    text = path.read_text().splitlines()
    line = next(i for i, s in enumerate(text) if f"def {symbol}(" in s or f"class {symbol}" in s)
    col = text[line].index(symbol) + 1
    driver = tmp_path / "driver.el"
    driver.write_text(DRIVER)
    out = tmp_path / "emacs-out.json"
    assert EMACS and EXE
    env = {
        **os.environ,
        "SLEEPY_OUT": str(out),
        "SLEEPY_PACKAGE": str(PACKAGE),
        "SLEEPY_EXE": EXE,
        "SLEEPY_FILE": str(path),
        "SLEEPY_LINE": str(line),
        "SLEEPY_COL": str(col),
        "SLEEPY_QUESTION": QUESTION,
    }
    # --batch implies -q: no user init, but Debian's site-start (which makes elpa-eglot
    # loadable) still runs
    proc = subprocess.run(
        [EMACS, "--batch", "-l", str(driver)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.exists(), f"emacs wrote nothing (exit {proc.returncode}):\n{proc.stderr}"
    results: dict[str, Any] = json.loads(out.read_text())
    assert results["errors"] == [], f"{results['errors']}\n{proc.stderr}"
    return results


def test_eglot_hover_commands_and_context(tmp_path: Path, shop: Path) -> None:
    results = _drive(tmp_path, shop, "shop/pricing.py", "price_cart")
    assert results["mode"] == "python-mode"
    assert results["server_class"] == "sleepy-repo-server"
    assert Path(results["root"]) == shop
    assert results["init_options"] == {"backend": "static", "idleSeconds": 45}
    assert set(results["commands"]) >= {"sleepy.ask", "sleepy.refresh", "sleepy.status"}

    contents = results["hover"]["contents"]
    hover = contents["value"] if isinstance(contents, dict) else str(contents)
    hover = re.sub(r"\\(.)", r"\1", hover)  # markdown escapes
    assert "price_cart" in hover
    assert "shop/pricing.py:" in hover  # a path:line citation

    assert results["notes"].startswith("# pricing.py\n\n# shop/pricing.py")
    assert (
        "- shop/pricing.py:75-102 · price_cart (symbol): function price_cart: def "
        in results["notes"]
    )
    assert "(qa): Q: What does shop/pricing.py export? shop/pricing.py exports" in results["notes"]

    assert results["status"].startswith("# status")
    assert "modules" in results["status"]
    assert results["ask"].startswith(f"# {QUESTION}")
    assert "\n## Context (" in results["ask"]
    assert "- shop/pricing.py:75-102 · price_cart (" in results["ask"]

    context = results["context"]
    assert context["schema_version"] == 1
    assert context["question"] == QUESTION
    assert context["budget"] == 400
    assert context["items"], "no context items"
    assert any(item["path"] == "shop/pricing.py" for item in context["items"])


def test_start_refuses_a_buffer_outside_a_repository(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "mod.py").write_text("def f():\n    return 1\n")
    out = tmp_path / "out.txt"
    driver = tmp_path / "driver.el"
    driver.write_text(
        """
(add-to-list 'load-path (getenv "SLEEPY_PACKAGE"))
(require 'sleepy-repo)
(setq sleepy-repo-executable "sleepy-repo-does-not-exist")
(find-file (getenv "SLEEPY_FILE"))
(let ((outcome (condition-case err (progn (sleepy-repo-start) "started")
                 (user-error (error-message-string err)))))
  (with-temp-file (getenv "SLEEPY_OUT") (insert outcome)))
(kill-emacs 0)
"""
    )
    env = {
        **os.environ,
        "SLEEPY_OUT": str(out),
        "SLEEPY_PACKAGE": str(PACKAGE),
        "SLEEPY_FILE": str(loose / "mod.py"),
    }
    assert EMACS
    proc = subprocess.run(
        [EMACS, "--batch", "-l", str(driver)],
        cwd=loose,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.exists(), proc.stderr
    assert "not inside a git repository" in out.read_text()
