#!/usr/bin/env bash
# The pytest suite against the built wheel, once per CPython minor found on this machine.
#
# For each interpreter: `maturin build --release -i <python>` (one wheel per minor, the crate is
# not abi3), a fresh venv outside the source tree, `pip install` of that wheel and of the test
# dependencies of requirements-dev.txt, then `python -P -m pytest` on the repo's tests/, where
# `import nova` is the installed wheel, never python/nova of the source tree (checked).
# The suites run one after another; a summary of who passed comes last.
#
# Environment:
#   NOVA_PYTHONS      versions to run, e.g. "3.11 3.12" (or interpreter paths); default: every
#                     one of 3.11 3.12 3.13 3.14 3.13t 3.14t found, and at least two of them.
#                     Every version named here must be found.
#   NOVA_PYTEST_ARGS  pytest arguments instead of the whole tests/, e.g. "tests/core/test_event.py -x";
#                     paths are relative to the repo.
#   NOVA_SUITE_LIMIT  seconds one interpreter's pytest run may take in all (default 900): past it
#                     the run gets SIGINT, then SIGKILL, and counts as failed. pytest-timeout's
#                     300 s per test cannot end a test whose thread waits on a GIL nobody releases.
#   NOVA_MATRIX_DIR   where the wheels and venvs go (default ~/.cache/nova-matrix);
#                     each version's folder is recreated on every run.
#   NOVA_CARGO_FEATURES  cargo features of the test wheels (default: extension-module,test-hooks
#                     when Cargo.toml declares test-hooks; --features replaces pyproject's list).
#   MATURIN           the maturin to build with (default: the project's .venv/bin/maturin).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MATURIN=${MATURIN:-$REPO/.venv/bin/maturin}
DEFAULT_PYTHONS="3.11 3.12 3.13 3.14 3.13t 3.14t"
SUITE_LIMIT=${NOVA_SUITE_LIMIT:-900}

say() { printf '==> %s\n' "$*"; }
die() { printf 'test-matrix: %s\n' "$*" >&2; exit 1; }
inside() { [[ "$1" == "$2" || "$1" == "$2"/* ]]; }  # is path $1 the folder $2 or under it?
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# The suites must see the installed wheel only: nothing of the caller's Python set-up leaks in.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONSAFEPATH VIRTUAL_ENV

MATURIN=$(command -v "$MATURIN") || die "no maturin at $MATURIN: run \`make venv\` first (or set MATURIN)"

mkdir -p "${NOVA_MATRIX_DIR:-$HOME/.cache/nova-matrix}"
MATRIX_DIR=$(cd "${NOVA_MATRIX_DIR:-$HOME/.cache/nova-matrix}" && pwd -P)
inside "$MATRIX_DIR" "$REPO" && die "NOVA_MATRIX_DIR ($MATRIX_DIR) must be outside the source tree"

if [[ -n "${NOVA_CARGO_FEATURES+set}" ]]; then
    FEATURES=$NOVA_CARGO_FEATURES
elif grep -qE '^test-hooks[[:space:]]*=' "$REPO/Cargo.toml"; then
    FEATURES=extension-module,test-hooks
else
    FEATURES=
fi

# --- finding the interpreters ------------------------------------------------------------------

# "3.12" or "3.13t" as the interpreter at $1 reports itself, or nothing if it does not run.
label_of() {
    "$1" -c 'import sys, sysconfig
print("%d.%d%s" % (sys.version_info[0], sys.version_info[1],
                   "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))' 2>/dev/null || true
}

# The newest pyenv install of version $1 ("3.12", "3.13t"): finals first, pre-releases if none.
pyenv_python() {
    local spec=$1 minor=${1%t} t= root names name
    [[ "$spec" == *t ]] && t=t
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root)
    else
        root=${PYENV_ROOT:-$HOME/.pyenv}
    fi
    [[ -d "$root/versions" ]] || return 0
    names=$(ls -1 "$root/versions")
    name=$(grep -E "^${minor//./\\.}\.[0-9]+$t\$" <<<"$names" | sort -V | tail -n 1 || true)
    [[ -n "$name" ]] || name=$(grep -E "^${minor//./\\.}\.[0-9]+(a|b|rc)[0-9]+$t\$" <<<"$names" |
                               sort -V | tail -n 1 || true)
    [[ -n "$name" && -x "$root/versions/$name/bin/python$spec" ]] &&
        echo "$root/versions/$name/bin/python$spec"
    return 0
}

# The interpreter for $1 (a version or a path): pyenv's newest patch, else python3.X on PATH
# (a pyenv shim for a version not selected does not run, and is passed over).
find_python() {
    local spec=$1 cand
    if [[ "$spec" == */* ]]; then
        [[ -x "$spec" ]] && echo "$spec"
        return 0
    fi
    for cand in "$(pyenv_python "$spec")" "$(command -v "python$spec" 2>/dev/null || true)"; do
        if [[ -n "$cand" && "$(label_of "$cand")" == "$spec" ]]; then
            "$cand" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 0
}

explicit=${NOVA_PYTHONS:+yes}
labels=() pythons=() missing=()
for spec in ${NOVA_PYTHONS:-$DEFAULT_PYTHONS}; do
    py=$(find_python "$spec")
    if [[ -z "$py" ]]; then
        missing+=("$spec (not found)")
        continue
    fi
    label=$(label_of "$py")
    [[ -n "$label" ]] || { missing+=("$spec (does not run)"); continue; }
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        missing+=("$label (no venv/ensurepip module; on Debian: apt-get install python$label-venv)")
        continue
    fi
    for seen in "${labels[@]}"; do
        [[ "$seen" == "$label" ]] && die "$spec: CPython $label listed twice"
    done
    labels+=("$label") pythons+=("$py")
done

for m in "${missing[@]}"; do
    say "skipping CPython $m"
done
if [[ -n "$explicit" ]]; then
    [[ ${#missing[@]} -eq 0 ]] || die "NOVA_PYTHONS=\"$NOVA_PYTHONS\": not every version was found"
    [[ ${#labels[@]} -ge 1 ]] || die "NOVA_PYTHONS is empty"
elif [[ ${#labels[@]} -lt 2 ]]; then
    die "found ${#labels[@]} CPython of $DEFAULT_PYTHONS (${labels[*]:-none}); the matrix needs at least two (pyenv install 3.12, or put python3.X on PATH)"
fi

# --- the pytest arguments ----------------------------------------------------------------------

pytest_args=()
have_path=
read -ra user_args <<<"${NOVA_PYTEST_ARGS:-}"
for arg in "${user_args[@]}"; do
    if [[ "$arg" != -* && -e "$REPO/${arg%%::*}" ]]; then
        pytest_args+=("$REPO/$arg")
        have_path=yes
    else
        pytest_args+=("$arg")
    fi
done
[[ -n "$have_path" ]] || pytest_args+=("$REPO/tests")

# A pytest plugin, put in the venv's site-packages and loaded with -p: names the nova that the
# tests import in the header, and stops the run before the first test if that nova, any module,
# or anything on sys.path is the source tree's python/ folder.
GUARD='import os
import sys

import pytest

REPO = os.path.realpath(os.environ["NOVA_MATRIX_REPO"])
SOURCE = os.path.join(REPO, "python")


def _inside(path: str, root: str) -> bool:
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def _problems() -> list[str]:
    import nova

    found = []
    if _inside(nova.__file__, REPO):
        found.append(f"nova imported from the source tree: {nova.__file__}")
    found += [f"module {name} from the source tree: {mod.__file__}"
              for name, mod in list(sys.modules.items())
              if getattr(mod, "__file__", None) and _inside(mod.__file__, SOURCE)]
    found += [f"source tree on sys.path: {p}" for p in sys.path if p and _inside(p, SOURCE)]
    return found


def pytest_report_header(config: pytest.Config) -> str:
    import nova

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return f"nova under test: {nova.__file__} (the GIL is {'on' if gil else 'off'})"


def pytest_collection_finish(session: pytest.Session) -> None:
    found = _problems()
    if found:
        pytest.exit("the tests would not test the installed wheel: " + "; ".join(found[:5]),
                    returncode=4)
'

# --- one interpreter ---------------------------------------------------------------------------

# Runs "$@" under `timeout` (its own process group, so the limit ends the tests' servers and
# workers too) and hands it a Ctrl-C or TERM that reaches this script; returns its status.
INTERRUPTED=
limited() {
    local pid rc
    timeout --signal=INT --kill-after=30 "$SUITE_LIMIT" "$@" &
    pid=$!
    trap 'INTERRUPTED=yes; kill -INT "$pid" 2>/dev/null || true' INT
    trap 'INTERRUPTED=yes; kill -TERM "$pid" 2>/dev/null || true' TERM
    while :; do
        rc=0
        wait "$pid" || rc=$?
        kill -0 "$pid" 2>/dev/null || break  # else wait returned for a trapped signal
    done
    trap - INT TERM
    return "$rc"
}

# Sets RESULT ("passed" or why not) and TIMES; returns non-zero on failure. Called in an `||`
# list, so `set -e` is off in here: every step that matters is checked by hand.
run_one() {
    local label=$1 py=$2 dir="$MATRIX_DIR/$1" tag t= wheels wheel vpy where t0 rc
    [[ "$label" == *t ]] && t=t
    tag="cp${label//[.t]/}-cp${label//[.t]/}$t"
    TIMES=
    rm -rf "$dir"
    mkdir -p "$dir/wheel"

    say "[$label] maturin build --release -i $py${FEATURES:+ --features $FEATURES}"
    t0=$SECONDS
    if ! (cd "$REPO" && "$MATURIN" build --release -i "$py" --out "$dir/wheel" \
              --target-dir "$REPO/target/matrix/$label" ${FEATURES:+--features "$FEATURES"}); then
        RESULT="FAILED (maturin build)"
        return 1
    fi
    TIMES="build $(elapsed $((SECONDS - t0)))"
    wheels=()
    for wheel in "$dir"/wheel/*.whl; do
        [[ -f "$wheel" ]] && wheels+=("$wheel")
    done
    if [[ ${#wheels[@]} -ne 1 ]]; then
        RESULT="FAILED (expected one wheel in $dir/wheel, found ${#wheels[@]})"
        return 1
    fi
    wheel=${wheels[0]}
    if [[ "$(basename "$wheel")" != *"-$tag-"* ]]; then
        RESULT="FAILED (built $(basename "$wheel"), not a $tag wheel)"
        return 1
    fi

    say "[$label] fresh venv $dir/venv, pip install $(basename "$wheel") and the test dependencies"
    t0=$SECONDS
    # The suite's requirements; a free-threaded lane leaves out orjson, which has no wheels for
    # it (nova falls back to json there, and the codec tests check that fallback).
    if [[ -n "$t" ]]; then
        grep -viE '^[[:space:]]*orjson([^a-z0-9_.-]|$)' "$REPO/requirements-test.txt" >"$dir/requirements-test.txt"
    else
        cp "$REPO/requirements-test.txt" "$dir/requirements-test.txt"
    fi
    vpy="$dir/venv/bin/python"
    if ! "$py" -m venv "$dir/venv" ||
       ! "$vpy" -m pip install -q --disable-pip-version-check --prefer-binary "$wheel" -r "$dir/requirements-test.txt"; then
        RESULT="FAILED (venv or pip install)"
        return 1
    fi
    TIMES+=", install $(elapsed $((SECONDS - t0)))"

    # The suite runs from the repo (pytest names tests relative to where it starts), under -P:
    # the repo is not on sys.path, and nova is not at its top anyway (python/nova).
    where=$(cd "$REPO" && "$vpy" -P -c 'import nova, nova._core; print(nova.__file__)') || {
        RESULT="FAILED (import nova)"
        return 1
    }
    say "[$label] nova under test: $where"
    if inside "$where" "$REPO" || ! inside "$where" "$dir/venv"; then
        RESULT="FAILED (nova imported from $where, not the installed wheel)"
        return 1
    fi

    printf '%s' "$GUARD" >"$("$vpy" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/nova_matrix_guard.py"
    say "[$label] python -P -m pytest -q -p no:cacheprovider -c pyproject.toml --rootdir . ${pytest_args[*]#"$REPO/"}"
    t0=$SECONDS
    rc=0
    # faulthandler_timeout: the stacks of every thread of a test still running after 310 s,
    # written by a C thread, so even when the Python threads are stuck.
    cd "$REPO"
    # A free-threaded lane runs with the GIL off whatever the test dependencies declare (an
    # extension module that does not declare free-threading support would turn it back on).
    local gil=()
    [[ -z "$t" ]] || gil=(PYTHON_GIL=0)
    NOVA_MATRIX_REPO="$REPO" limited env "${gil[@]}" "$vpy" -P -m pytest -q -p no:cacheprovider -p nova_matrix_guard \
        -o faulthandler_timeout=310 -c "$REPO/pyproject.toml" --rootdir "$REPO" "${pytest_args[@]}" ||
        rc=$?
    TIMES+=", tests $(elapsed $((SECONDS - t0)))"
    if [[ -n "$INTERRUPTED" ]]; then
        RESULT="INTERRUPTED"
        return 1
    elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
        RESULT="FAILED (pytest stopped after ${SUITE_LIMIT}s)"
        return 1
    elif [[ $rc -gt 128 ]]; then
        # A crash: its "Fatal Python error" went to pytest's capture of fd 2.
        RESULT="FAILED (pytest died of signal $((rc - 128)))"
        say "[$label] pytest crashed: NOVA_PYTEST_ARGS=\"-s ...\" shows what the crash printed"
        return 1
    elif [[ $rc -ne 0 ]]; then
        RESULT="FAILED (pytest exit $rc)"
        return 1
    fi
    RESULT=passed
}

say "CPython matrix: ${labels[*]} (folders under $MATRIX_DIR${FEATURES:+, cargo features: $FEATURES})"
summary=() failed=0 start=$SECONDS
for i in "${!labels[@]}"; do
    label=${labels[$i]} py=${pythons[$i]}
    version=$("$py" -c 'import platform; print(platform.python_version())')
    t0=$SECONDS
    RESULT= TIMES=
    run_one "$label" "$py" || failed=$((failed + 1))
    summary+=("$(printf '  %-6s CPython %-9s %-36s %s' "$label" "$version" "$RESULT" \
                 "$(elapsed $((SECONDS - t0)))${TIMES:+ ($TIMES)}")")
    [[ -z "$INTERRUPTED" ]] || break
done

echo
say "test matrix summary ($(elapsed $((SECONDS - start))) in all):"
printf '%s\n' "${summary[@]}"
for m in "${missing[@]}"; do
    printf '  %-6s skipped: %s\n' "${m%% *}" "${m#* }"
done
if [[ -n "$INTERRUPTED" ]]; then
    say "interrupted"
    exit 130
elif [[ $failed -ne 0 ]]; then
    say "$failed of ${#labels[@]} failed"
    exit 1
fi
say "all ${#labels[@]} passed"
