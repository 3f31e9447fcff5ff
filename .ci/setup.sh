#!/usr/bin/env bash
# Set up fxgate in ./.venv and run the main job or the test suite. The README's two commands call this script,
# and .ci/run calls the second one, so what a new user types and what CI runs cannot drift apart.
#
#   bash .ci/setup.sh demo      # install fxgate and run `fxgate demo` on the bundled EURUSD H1 sample
#   bash .ci/setup.sh test      # install fxgate with the dev, train, serve and cluster extras and run the tests
#
# Needs Python >= 3.11 (PYTHON=python3.12 to choose one) and a C/C++ compiler (llama-cpp-python builds from source).
set -euo pipefail
cd "$(dirname "$0")/.."

job=${1:-}
shift || true
case "$job" in
  demo|test) ;;
  *) echo "usage: bash .ci/setup.sh demo|test [extra arguments for the job]" >&2; exit 2 ;;
esac

py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: $py not found; install Python >= 3.11 or set PYTHON=/path/to/python3.11" >&2; exit 2
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: fxgate needs Python >= 3.11; $py is $("$py" -V 2>&1). Set PYTHON=python3.11 (or newer)." >&2; exit 2
fi

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating virtual environment .venv"
  "$py" -m venv .venv
fi
vpy=.venv/bin/python
$vpy -m pip install -q --upgrade pip setuptools wheel

if ! $vpy -c "import llama_cpp" >/dev/null 2>&1; then
  step "installing llama-cpp-python: it compiles llama.cpp from source, about 9 minutes on 2 cores (pip caches the wheel, so only the first install takes that long)"
  log=.venv/llama-cpp-build.log
  set +e
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
    $vpy -m pip install -v "llama-cpp-python>=0.3.36,<0.4" 2>&1 | tee "$log" | awk '
      /^ *\[[0-9]+\/[0-9]+\]/ {
        match($0, /[0-9]+\/[0-9]+/); split(substr($0, RSTART, RLENGTH), f, "/");
        pct = int(100 * f[1] / f[2]);
        if (pct >= last + 5 || f[1] == f[2]) { printf "    compiling llama.cpp: %3d%% (%s/%s)\n", pct, f[1], f[2]; last = pct; fflush() }
        next }
      /Using cached llama_cpp_python|Successfully installed|Successfully built/ { print "    " $0; fflush() }'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "error: building llama-cpp-python failed (full log: $log). It needs a C/C++ compiler and cmake-capable build tools (Debian: apt-get install build-essential)." >&2
    exit "$status"
  fi
fi

# The CPU build of torch first: an unpinned torch (asked for by the train extra) would pull a multi-GB CUDA build.
# Both jobs need it: the demo builds the nano LLM of layers 2 and 3 with torch and transformers on first use.
if ! $vpy -c "import torch" >/dev/null 2>&1; then
  step "installing torch 2.13.0 (CPU build)"
  $vpy -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi

case "$job" in
  demo)
    step "installing fxgate with the train extra (the demo builds the nano LLM with it)"
    $vpy -m pip install -q -e ".[train]"
    step "running the main job: fxgate demo (walk-forward replay of the bundled EURUSD H1 sample, all four layers)"
    exec .venv/bin/fxgate demo "$@"
    ;;
  test)
    step "installing fxgate with the dev, train, serve and cluster extras"
    $vpy -m pip install -q -e ".[dev,train,serve]"
    $vpy -m pip install -q -e ".[cluster]"  # ray: tests/engine/test_ray_replay.py fails without it under CI
    step "running the test suite (slow statistical tests included)"
    set +e
    $vpy -m pytest "$@"
    status=$?
    set -e
    if [ "$status" -eq 5 ]; then
      echo "error: pytest collected no tests; that is a failure, not a pass" >&2
      exit 1
    fi
    exit "$status"
    ;;
esac
