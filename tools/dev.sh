#!/usr/bin/env bash
# gradkit developer commands. Each one first installs everything (core, every plugins/*, every envs/*)
# editable into one virtual environment with a single pip call, pinned by tools/constraints.txt.
#
#   bash tools/dev.sh run      install, then `gradkit list` and one quick reproduction (the main job)
#   bash tools/dev.sh test     install, then the whole test suite (what CI runs)
#   bash tools/dev.sh install  install only
#
# GRADKIT_VENV (default .venv) chooses the environment; PYTHON (default python3) the interpreter;
# PYTEST_ARGS adds pytest arguments; GRADKIT_WORKERS (default 2) sets pytest-xdist workers.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GRADKIT_VENV:-$root/.venv}
python=${PYTHON:-python3}

install() {
  local t0=$SECONDS
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  # setuptools is the build backend of every package; with it in the venv, pip can skip per-package
  # isolated build environments (--no-build-isolation), which keeps ~20 editable installs fast.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "setuptools>=64" wheel
  # the core with its extras: plot (matplotlib, for reproductions' PNGs) and ray (--executor ray; its tests run in CI)
  local pkgs=(-e "$root[plot,ray]")
  for d in "$root"/plugins/*/ "$root"/envs/*/; do
    [ -f "$d/pyproject.toml" ] || continue
    # a package's `test` extra holds the peers its tests compare against (captum, ribs, torch-tract, ...)
    if grep -qE '^test *=' "$d/pyproject.toml"; then pkgs+=(-e "${d%/}[test]"); else pkgs+=(-e "${d%/}"); fi
  done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
    -c "$root/tools/constraints.txt" "${pkgs[@]}" "pytest>=7.4" "pytest-xdist>=3.3"
  echo "installed $(( ${#pkgs[@]} / 2 )) editable packages in $((SECONDS - t0)) s"
}

cmd=${1:-test}
shift || true
case "$cmd" in
  install)
    install
    ;;
  run)
    install
    "$venv/bin/gradkit" list
    "$venv/bin/gradkit" plugins
    "$venv/bin/gradkit" reproduce lion --quick --no-progress --out "$root/results/lion" "$@"
    ;;
  test)
    install
    cd "$root"
    # one BLAS/OpenMP thread per xdist worker: the suite is sized for 2 cores
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
    export MPLBACKEND=Agg
    set +e
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pytest -n "${GRADKIT_WORKERS:-2}" -m "not slow" -q -p no:cacheprovider \
      --durations=15 ${PYTEST_ARGS:-} "$@" tests plugins envs
    rc=$?
    set -e
    # pytest exits 5 when it collected no test: that is a failure here, not a pass
    exit $rc
    ;;
  *)
    echo "usage: bash tools/dev.sh {run|test|install} [args]" >&2
    exit 2
    ;;
esac
