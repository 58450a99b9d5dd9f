#!/usr/bin/env bash
# Build Horovod 0.28.1 from its PyPI sdist into a cached wheel and install it into a venv.
#
#   .ci/build-horovod.sh [VENV]        # VENV defaults to .venv
#
# Why a build script: 0.28.1 (the last release) compiles against torch 2.x only after switching
# two CMake files from C++14 to C++17 (fixed upstream after 0.28.1, never released), and its
# CMake strips any -std= from CXXFLAGS, so the sdist itself must be patched. See
# docs/install.md and ENVIRONMENT.md (Horovod).
#
# The wheel is cached under ${AUGENGINE_WHEEL_CACHE:-$HOME/.cache/augengine/wheels}, keyed by the
# venv's torch version and the build flavour (cpu-gloo, or nccl when `nvidia-smi` finds a GPU),
# because Horovod's torch extension is tied to the torch ABI it was built against. A cached wheel
# skips the build (about 5 minutes on 2 cores).
set -euo pipefail

HOROVOD_VERSION=0.28.1
VENV=$(realpath -m "${1:-.venv}")   # absolute: the build runs inside the unpacked sdist
PY="$VENV/bin/python"
CACHE=${AUGENGINE_WHEEL_CACHE:-$HOME/.cache/augengine/wheels}

if [[ ! -x "$PY" ]]; then
    echo "build-horovod: no python at $PY (give the venv as the first argument)" >&2
    exit 2
fi
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null) || {
    echo "build-horovod: torch is not installed in $VENV; install the pinned torch first" >&2
    exit 2
}

export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
       HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=gloo
FLAVOUR=cpu-gloo
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export HOROVOD_GPU_OPERATIONS=NCCL
    FLAVOUR=nccl
    # torch's CUDA wheels bring NCCL as nvidia-nccl-cu*; point Horovod's CMake at it unless the
    # caller already chose an NCCL install.
    if [[ -z "${HOROVOD_NCCL_HOME:-}" ]]; then
        NCCL_DIR=$("$PY" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' \
                   2>/dev/null || true)
        if [[ -n "$NCCL_DIR" && -d "$NCCL_DIR/include" ]]; then
            export HOROVOD_NCCL_HOME="$NCCL_DIR"
        fi
    fi
fi

WHEEL_DIR="$CACHE/horovod-$HOROVOD_VERSION-torch$TORCH_VERSION-$FLAVOUR"
WHEEL=$(ls "$WHEEL_DIR"/horovod-"$HOROVOD_VERSION"-*.whl 2>/dev/null | head -n 1 || true)

if [[ -n "$WHEEL" ]]; then
    echo "build-horovod: using cached wheel $WHEEL"
else
    echo "build-horovod: building horovod $HOROVOD_VERSION ($FLAVOUR) for torch $TORCH_VERSION"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-horovod.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$WORK"
    tar -xzf "$WORK/horovod-$HOROVOD_VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/horovod-$HOROVOD_VERSION"
    for cmake_file in "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"; do
        sed -i 's/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD 17/' "$cmake_file"
        # A silent no-op sed would only show up minutes later as a C++ error inside torch headers.
        grep -q 'CMAKE_CXX_STANDARD 17' "$cmake_file" || {
            echo "build-horovod: C++17 patch did not apply to $cmake_file" >&2
            exit 1
        }
    done
    START=$SECONDS
    (cd "$SRC" && "$PY" -m pip wheel --no-build-isolation --no-deps . -w "$WORK/wheel")
    BUILT=$(ls "$WORK"/wheel/horovod-*.whl)
    # Copy, then rename: an interrupted copy never looks like a cached wheel.
    mkdir -p "$WHEEL_DIR"
    cp "$BUILT" "$WHEEL_DIR/$(basename "$BUILT").partial"
    mv "$WHEEL_DIR/$(basename "$BUILT").partial" "$WHEEL_DIR/$(basename "$BUILT")"
    WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
    echo "build-horovod: built $WHEEL in $((SECONDS - START)) s"
fi

"$PY" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
# Runtime dependencies from the wheel's metadata (cloudpickle, psutil, pyyaml, packaging);
# installed without --force-reinstall so torch is never touched.
"$PY" -m pip install --quiet "$WHEEL"
"$PY" -c "import horovod, horovod.torch; print('build-horovod: horovod', horovod.__version__, 'installed in $VENV')"
