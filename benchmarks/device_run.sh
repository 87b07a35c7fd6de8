#!/usr/bin/env bash
# The one command a session lent a GPU gives the device tool (see benchmarks/device_suite.py):
#   JOBS=default MAX_MINUTES=8 bash benchmarks/device_run.sh
# carry: .device/wheels and .device/data (plus .device/data_full and eval/resume for the long jobs;
# `python -m benchmarks.device_suite --dry-run --jobs ...` prints the list).
# It installs the carried wheels, puts the carried data set where the domain reads it, runs the
# jobs within the budget and leaves $OUT/results.tgz and $OUT/log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/device_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GIT_PYTHON_REFRESH=quiet
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
mkdir -p /usr/share/datasets/fashion-mnist && cp .device/data/*.gz /usr/share/datasets/fashion-mnist/ || exit 1
if compgen -G ".device/data_full/*.gz" >/dev/null; then cp .device/data_full/*.gz /usr/share/datasets/fashion-mnist/; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/log.txt"
python3 -m benchmarks.device_suite --jobs "${JOBS:-default}" --max-minutes "${MAX_MINUTES:-8}" --pack "$OUT" 2>&1 | tee -a "$OUT/log.txt"
