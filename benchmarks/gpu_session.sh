#!/usr/bin/env bash
# One lent GPU session, in one go: the CUDA tests, then benchmarks/gpu.py, then the whole
# test suite, each under its own time limit, logs and JSON into $OUT (or ./gpu-out).
#   bash benchmarks/gpu_session.sh
# Where the GPU machine lacks a dependency, put its wheels in .whl/ (see the device notes).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export E2ELAB_CACHE=/tmp/e2elab-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
began=$SECONDS
timeout 150 python3 -m pytest -q -p no:cacheprovider -n 6 --tb=short tests/test_cuda.py \
  >"$OUT/test_cuda.log" 2>&1
echo "test_cuda: exit $? in $((SECONDS - began)) s"; tail -25 "$OUT/test_cuda.log"
began=$SECONDS
if [ "${BENCH:-all}" = command ]; then  # the whole-command benchmark alone
  timeout 170 python3 benchmarks/command.py --device cuda --budget 30000 >"$OUT/gpu_bench.log" 2>&1
else
  timeout 170 python3 benchmarks/gpu.py --seconds 1.5 --command-budget 30000 >"$OUT/gpu_bench.log" 2>&1
fi
echo "benchmarks: exit $? in $((SECONDS - began)) s"; tail -60 "$OUT/gpu_bench.log"
cp benchmarks/results/*-cuda.json "$OUT"/ 2>/dev/null
began=$SECONDS
timeout "${SUITE_SECONDS:-100}" python3 -m pytest -q -p no:cacheprovider -n 12 --tb=line -rf \
  --ignore=tests/test_report_browser.py >"$OUT/suite.log" 2>&1
echo "suite: exit $? in $((SECONDS - began)) s"; tail -15 "$OUT/suite.log"
