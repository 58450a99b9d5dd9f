#!/usr/bin/env bash
# The project's first-GPU check (issue 9 item 6): on a bare GPU machine (torch with CUDA, CuPy;
# no Ray, zarr, DALI or Horovod), in under 8 minutes, from the repository root:
#
#   bash benchmarks/gpu_check.sh                 # OUT=<folder> to choose where results go
#
# Steps, each time-boxed and reported on one STEP line (OK, FAIL, TIMEOUT or SKIP with why):
#   env         nvidia-smi, versions, which Python modules are importable
#   parity      the CUDA parity tests (pytest tests/ops/test_cuda_parity.py and the batch ops'
#               tests/ops/test_batch.py: the ragged resize, warp_affine; GPU and NumPy halves)
#   srad        benchmarks/bench_srad.py --gpu-only (bandwidth against a device copy)
#   bmode       benchmarks/bench_bmode_gpu.py (frames/s, grey levels against the CPU)
#   decoder     benchmarks/bench_decoder.py: fp32 and bf16 images/s and TFLOP/s against a bf16
#               matmul of the same run
#   production  benchmarks/bench_production.py --device cuda: a 64-image probe, then the largest
#               N (<= 800, the issue's target set) whose pairs fit the time left at the probe's rate
# Results: $OUT/summary.txt (STEP lines and each step's figures), $OUT/gpu_check.log (all output),
# $OUT/decoder.json and $OUT/production*.json (four files: the device tool returns at most 8).
#
# Nothing is installed from the internet. Wheels in $WHEELS (default .whl; make them with
# benchmarks/gpu_wheels.sh and carry the folder) are installed offline into a temporary folder
# first: the production step needs pydantic and pydicom, which the GPU image lacks; without zarr
# it times the write floor instead of the store (labelled in its output).
set -u
ROOT=$(pwd)
[[ -f "$ROOT/augengine/ops/_cuda.py" ]] || { echo "run from the augengine repository root"; exit 2; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
BUDGET=${GPU_CHECK_SECONDS:-450}   # the steps' total, under the issue's 8 minutes
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
START=$(date +%s)
: > "$LOG"
: > "$SUMMARY"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$SUMMARY" "$LOG"; }
elapsed() { echo $(( $(date +%s) - START )); }

if compgen -G "$WHEELS/*.whl" > /dev/null; then
    SITE=$(mktemp -d)
    if $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
            >> "$LOG" 2>&1; then
        export PYTHONPATH="$SITE:$PYTHONPATH"
        say "WHEELS installed offline from $WHEELS: $(ls "$WHEELS" | tr '\n' ' ')"
    else
        say "WARN wheels in $WHEELS did not install (see gpu_check.log)"
    fi
fi

missing() {   # missing MODULE...: prints the first that does not import
    local module
    for module in "$@"; do
        $PY -c "import $module" > /dev/null 2>&1 || { echo "$module"; return; }
    done
}

CUDA=$($PY -c "import torch, cupy; print(int(torch.cuda.is_available() and
cupy.cuda.runtime.getDeviceCount() > 0))" 2>/dev/null || echo 0)

# step NAME LIMIT_S NEEDS_GPU "MODULES" command...: run it time-boxed, log it, one STEP line.
step() {
    local name=$1 limit=$2 gpu=$3 modules=$4 absent rc begin
    shift 4
    if [[ $gpu == gpu && $CUDA != 1 ]]; then
        say "STEP $name SKIP: no CUDA device"
        return
    fi
    absent=$(missing $modules)
    if [[ -n $absent ]]; then
        say "STEP $name SKIP: Python module $absent missing (carry its wheel: benchmarks/gpu_wheels.sh)"
        return
    fi
    begin=$(date +%s)
    echo "=== $name (limit ${limit}s, t+$(elapsed)s): $*" >> "$LOG"
    timeout -k 10 "$limit" "$@" > "$OUT/.step.log" 2>&1
    rc=$?
    cat "$OUT/.step.log" >> "$LOG"
    case $rc in
        0) say "STEP $name OK ($(( $(date +%s) - begin ))s)" ;;
        124|137) say "STEP $name TIMEOUT after ${limit}s" ;;
        *) say "STEP $name FAIL rc=$rc ($(( $(date +%s) - begin ))s)" ;;
    esac
    # The figures: the step's last lines (pytest's verdict, the benchmarks' tables).
    tail -n 16 "$OUT/.step.log" | sed "s/^/  $name| /" >> "$SUMMARY"
    rm -f "$OUT/.step.log"
}

left() { echo $(( BUDGET - $(elapsed) )); }

say "gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); CUDA=$CUDA"
step env 20 any "" bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
--format=csv 2>&1 | head -n 3; $PY - <<'EOF'
import importlib, sys
print('python', sys.version.split()[0])
for name in ('numpy', 'scipy', 'torch', 'cupy', 'pytest', 'pydantic', 'yaml', 'PIL', 'pydicom',
             'pyarrow', 'zarr', 'ray'):
    try:
        print('have', name, getattr(importlib.import_module(name), '__version__', ''))
    except Exception as error:
        print('missing', name, type(error).__name__)
EOF"
step parity 120 gpu "pytest scipy cupy" $PY -m pytest -q -p no:cacheprovider -o addopts="" \
    tests/ops/test_cuda_parity.py tests/ops/test_batch.py -k "not emulated"
step srad 45 gpu "cupy" $PY benchmarks/bench_srad.py --gpu-only
step bmode 45 gpu "cupy scipy" $PY benchmarks/bench_bmode_gpu.py
step decoder 60 gpu "torch" $PY benchmarks/bench_decoder.py --device cuda --out "$OUT/decoder.json"

PRODUCTION_NEEDS="torch cupy pydantic yaml PIL scipy pydicom"
step production-probe 120 gpu "$PRODUCTION_NEEDS" $PY benchmarks/bench_production.py --device cuda \
    --n 64 --size 224 --batch-size 256 --warmup 1 --out "$OUT/production-probe.json"
if [[ $CUDA != 1 ]]; then
    say "STEP production SKIP: no CUDA device"
elif [[ ! -f "$OUT/production-probe.json" ]]; then
    say "STEP production SKIP: the probe gave no rate to size it by"
else
    # Time left for the full run's images at the probe's rate, with 60 s kept for its setup and
    # warm-up shard; N sources give N^2 / 2 within-class pairs.
    N=$($PY -c "
import json, math
rate = json.load(open('$OUT/production-probe.json'))['production']['images_per_s']
n = int(math.sqrt(2 * rate * max($(left) - 60, 0))) // 2 * 2
print(min(n, 800))")
    if (( N > 64 )); then
        step production "$(left)" gpu "$PRODUCTION_NEEDS" $PY benchmarks/bench_production.py \
            --device cuda --n "$N" --size 224 --batch-size 256 --warmup 1 \
            --out "$OUT/production.json"
    else
        say "STEP production SKIP: at the probe's rate no N > 64 fits the $(left)s left"
    fi
fi

say "gpu_check done in $(elapsed)s: $(grep -c '^STEP .* OK' "$SUMMARY") OK, \
$(grep -c -E '^STEP .* (FAIL|TIMEOUT)' "$SUMMARY") failed, $(grep -c '^STEP .* SKIP' "$SUMMARY") skipped; \
summary in $SUMMARY"
