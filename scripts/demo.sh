#!/usr/bin/env bash
# The main job: execute notebooks/quickstart.ipynb (embedded text-to-image and streaming text
# models, on this machine's CPU, no network) and save the result with every output embedded.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
.venv/bin/jupyter nbconvert --to notebook --execute notebooks/quickstart.ipynb \
  --ExecutePreprocessor.timeout=600 --output-dir build --output quickstart.ipynb
echo "executed notebook: build/quickstart.ipynb (open it in JupyterLab: .venv/bin/jupyter lab build/quickstart.ipynb)"
