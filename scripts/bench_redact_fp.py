"""False positives of redaction: the share of lines that redaction changes in real
repositories, where (we assume) no line holds a live secret. Target: <= 0.5%.

Usage: python scripts/bench_redact_fp.py REPO [REPO ...] [--json PATH] [--examples N]

Every file git tracks that decodes as UTF-8 is read whole and redacted as served text is
(``sleepy_repo.redact.redact_text``); a line counts as changed when its redacted text
differs. This is every line of the repository, a superset of what any question is served.
The changed lines are printed, so a reader can judge whether each is a real secret.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from sleepy_repo.redact import redact_text


def measure(repo: Path, examples: int) -> dict[str, object]:
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.split(b"\0")
    lines = changed = files = 0
    shown: list[str] = []
    for raw in names:
        path = repo / raw.decode("utf-8", "replace")
        if not raw or not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        files += 1
        before, after = text.splitlines(), redact_text(text).splitlines()
        lines += len(before)
        for i, (a, b) in enumerate(zip(before, after, strict=False), 1):
            if a != b:
                changed += 1
                if len(shown) < examples:
                    shown.append(f"{raw.decode('utf-8', 'replace')}:{i}: {a.strip()[:120]}")
    return {
        "repo": str(repo),
        "files": files,
        "lines": lines,
        "changed": changed,
        "share_percent": round(100 * changed / max(lines, 1), 4),
        "examples": shown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repos", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--examples", type=int, default=10)
    args = parser.parse_args()
    rows = [measure(r, args.examples) for r in args.repos]
    print(f"{'repo':<40} {'files':>6} {'lines':>8} {'changed':>8} {'share':>8}")
    for r in rows:
        print(
            f"{Path(str(r['repo'])).name:<40} {r['files']:>6} {r['lines']:>8} "
            f"{r['changed']:>8} {r['share_percent']:>7.3f}%"
        )
        for e in r["examples"]:  # type: ignore[attr-defined]
            print(f"    {e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
