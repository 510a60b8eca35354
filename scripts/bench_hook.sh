#!/usr/bin/env bash
# Pre-commit hook wall time on a 20-file commit: notes precomputed at idle time
# (`sleepy-repo refresh` before the commit) vs not. Needs sleepy-repo and pre-commit on PATH.
# Corpus: a copy of the stdlib email, json and http packages in a temp git repo.
# Usage: scripts/bench_hook.sh [TRIALS]   (prints one line per measurement; medians at the end)
set -euo pipefail
TRIALS=${1:-5}
export GIT_CONFIG_GLOBAL=/dev/null GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b
W=$(mktemp -d); export PRE_COMMIT_HOME="$W/pch"; R="$W/repo"; mkdir -p "$R"
STD=$(python3 -c "import email,os;print(os.path.dirname(os.path.dirname(email.__file__)))")
cp -r "$STD/email" "$STD/json" "$STD/http" "$R/"; find "$R" -name __pycache__ -prune -exec rm -rf {} +
cd "$R"; git init -q -b main; sleepy-repo init >/dev/null; printf '[notes]\ncommit = true\n' > .sleepy/config.toml
EXE=$(command -v sleepy-repo)
cat > .pre-commit-config.yaml <<YAML
repos:
- repo: local
  hooks:
  - {id: sleepy-repo, name: sleepy-repo notes, entry: $EXE hook pre-commit, language: unsupported, pass_filenames: true, require_serial: true, always_run: true, files: '(?i)\.(py|pyi|js|mjs|cjs|jsx|ts|mts|cts|tsx|go|rs)$', exclude: '^\.sleepy/'}
YAML
pre-commit install >/dev/null; git add -A; git commit -qm init --no-verify; sleepy-repo refresh >/dev/null 2>&1
FILES=$(git ls-files '*.py' | head -20)
edit() { for f in $FILES; do echo "# edit $RANDOM$RANDOM" >> "$f"; done; git add $FILES; }
t() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000000 )); }
declare -a A B
for i in $(seq 1 "$TRIALS"); do
  edit; a=$(t git commit -qm "w$i"); A+=("$a"); echo "commit, notes not precomputed: $a ms"
  edit; sleepy-repo refresh >/dev/null 2>&1; b=$(t git commit -qm "p$i"); B+=("$b"); echo "commit, notes precomputed: $b ms"
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| 20-file commit through pre-commit | median ms |"; echo "|---|---|"
echo "| notes not precomputed | $(med "${A[@]}") |"; echo "| notes precomputed (refresh first) | $(med "${B[@]}") |"
rm -rf "$W"
