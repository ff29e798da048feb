#!/usr/bin/env bash
# Set up a development/CI environment from the project's own files: a venv in .venv with the
# CPU build of torch pinned (a plain `torch` requirement would pull a multi-GB CUDA build),
# the package with its [local,test] extras (this builds the JupyterLab extension with jlpm),
# and Debian's chromium for the browser tests when apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q '.[local,test]'
if [ "${SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/pip check || true
