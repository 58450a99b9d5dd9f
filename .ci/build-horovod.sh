#!/usr/bin/env bash
# Build Horovod 0.28.1 from its PyPI sdist into a cached wheel and install it into a venv.
#
#   .ci/build-horovod.sh [--gpu=auto|nccl|none] [--print-env] [VENV]     # VENV defaults to .venv
#
# Why a build script: 0.28.1 (the last release) compiles against torch 2.x only after switching
# two CMake files from C++14 to C++17 (fixed upstream after 0.28.1, never released), and its
# CMake strips any -std= from CXXFLAGS, so the sdist itself must be patched. See
# docs/install.md and ENVIRONMENT.md (Horovod).
#
# --gpu (or AUGENGINE_HOROVOD_GPU; not HOROVOD_GPU, which Horovod's CMake reads itself):
#   none  CPU build, gloo collectives (CI).
#   nccl  GPU build: NCCL collectives, CUDA kernels for HOROVOD_BUILD_CUDA_CC_LIST (default 80,90:
#         A100, H100). Needs nvcc (HOROVOD_CUDA_HOME, CUDA_HOME, CUDA_PATH, PATH or
#         /usr/local/cuda) and NCCL (HOROVOD_NCCL_HOME, else the pip package torch's CUDA wheels
#         bring, nvidia-nccl-cu12/-cu13); fails when either is missing. Needs no GPU: use it in
#         image builds, where nvidia-smi sees none.
#   auto  (default) nccl when nvidia-smi lists a GPU, else none (and says so).
# --print-env prints the build settings (HOROVOD_*, the NCCL found, the cache folder) and exits
# without building.
#
# The wheel is cached under ${AUGENGINE_WHEEL_CACHE:-$HOME/.cache/augengine/wheels}, keyed by the
# venv's torch version and the build flavour (cpu-gloo, or nccl-sm<archs>), because Horovod's
# torch extension is tied to the torch ABI it was built against. A cached wheel skips the build
# (about 5 minutes on 2 cores).
set -euo pipefail

HOROVOD_VERSION=0.28.1
GPU=${AUGENGINE_HOROVOD_GPU:-auto}
PRINT_ENV=0
VENV_ARG=.venv
for arg in "$@"; do
    case $arg in
        --gpu=*) GPU=${arg#--gpu=} ;;
        --print-env) PRINT_ENV=1 ;;
        -*) echo "build-horovod: unknown option $arg (usage: [--gpu=auto|nccl|none]" \
                 "[--print-env] [VENV])" >&2
            exit 2 ;;
        *) VENV_ARG=$arg ;;
    esac
done
case $GPU in
    auto | nccl | none) ;;
    *) echo "build-horovod: --gpu must be auto, nccl or none, got '$GPU'" >&2
       exit 2 ;;
esac

VENV=$(realpath -m "$VENV_ARG")   # absolute: the build runs inside the unpacked sdist
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
WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-horovod.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [[ $GPU == auto ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        GPU=nccl
    else
        GPU=none
        echo "build-horovod: no GPU visible to nvidia-smi: building the CPU (gloo) flavour;" \
             "pass --gpu=nccl for a GPU build without a GPU (image builds)" >&2
    fi
fi

# The pip NCCL (nvidia-nccl-cu12/-cu13) as the folder holding include/nccl.h, or nothing.
# nvidia.nccl is a namespace package: __file__ is None, its folders are in __path__.
find_pip_nccl() {
    "$PY" -c '
import os
try:
    import nvidia.nccl as nccl
except ImportError:
    raise SystemExit(0)
found = [d for d in nccl.__path__ if os.path.isfile(os.path.join(d, "include", "nccl.h"))]
print(found[0] if found else "")
'
}

# HOROVOD_NCCL_HOME for the pip NCCL, made in the build folder: the wheel ships only the
# runtime name lib/libnccl.so.2, and CMake links against libnccl.so.
nccl_home_from_pip() {
    local pip_dir=$1 home="$WORK/nccl" library
    library=$(ls "$pip_dir"/lib/libnccl.so* 2>/dev/null | head -n 1 || true)
    if [[ -z "$library" ]]; then
        echo "build-horovod: $pip_dir has include/nccl.h but no lib/libnccl.so*" >&2
        exit 1
    fi
    mkdir -p "$home/lib"
    ln -s "$pip_dir/include" "$home/include"
    ln -s "$library" "$home/lib/libnccl.so"
    echo "$home"
}

# The CUDA toolkit holding bin/nvcc; one the caller named must have it (Horovod's CMake would
# take HOROVOD_CUDA_HOME/bin/nvcc and fail far later).
find_cuda_home() {
    local candidate
    if [[ -n "${HOROVOD_CUDA_HOME:-}" ]]; then
        if [[ -x "$HOROVOD_CUDA_HOME/bin/nvcc" ]]; then
            echo "$HOROVOD_CUDA_HOME"
        fi
        return 0
    fi
    for candidate in "${CUDA_HOME:-}" "${CUDA_PATH:-}" \
                     "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /none/bin/nvcc)")")" \
                     /usr/local/cuda; do
        if [[ -n "$candidate" && -x "$candidate/bin/nvcc" ]]; then
            echo "$candidate"
            return
        fi
    done
}

export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
       HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=gloo
FLAVOUR=cpu-gloo
NCCL_SOURCE=
if [[ $GPU == nccl ]]; then
    CUDA_DIR=$(find_cuda_home)
    if [[ -z "$CUDA_DIR" ]]; then
        echo "build-horovod: GPU build asked for, but no CUDA toolkit (bin/nvcc) was found in" \
             "${HOROVOD_CUDA_HOME:-CUDA_HOME, CUDA_PATH, PATH or /usr/local/cuda}" >&2
        exit 1
    fi
    export HOROVOD_CUDA_HOME=$CUDA_DIR
    export HOROVOD_BUILD_CUDA_CC_LIST=${HOROVOD_BUILD_CUDA_CC_LIST:-80,90}
    if [[ -n "${HOROVOD_NCCL_HOME:-}" ]]; then
        NCCL_SOURCE=$HOROVOD_NCCL_HOME
    else
        NCCL_SOURCE=$(find_pip_nccl)
        if [[ -z "$NCCL_SOURCE" ]]; then
            echo "build-horovod: GPU build asked for, but no NCCL was found: install torch's CUDA" \
                 "build (it brings nvidia-nccl-cu12/-cu13) or set HOROVOD_NCCL_HOME" >&2
            exit 1
        fi
        export HOROVOD_NCCL_HOME
        HOROVOD_NCCL_HOME=$(nccl_home_from_pip "$NCCL_SOURCE")
        # The wheel's library is shared only; its SONAME is what torch loads too.
        export HOROVOD_NCCL_LINK=SHARED
    fi
    export HOROVOD_GPU_OPERATIONS=NCCL
    FLAVOUR=nccl-sm${HOROVOD_BUILD_CUDA_CC_LIST//,/-}
fi

WHEEL_DIR="$CACHE/horovod-$HOROVOD_VERSION-torch$TORCH_VERSION-$FLAVOUR"
WHEEL=$(ls "$WHEEL_DIR"/horovod-"$HOROVOD_VERSION"-*.whl 2>/dev/null | head -n 1 || true)

if [[ $PRINT_ENV == 1 ]]; then
    env | grep '^HOROVOD_' | sort
    echo "NCCL_SOURCE=$NCCL_SOURCE"
    if [[ -n "${HOROVOD_NCCL_HOME:-}" && -e "$HOROVOD_NCCL_HOME/lib/libnccl.so" ]]; then
        echo "NCCL_LIBRARY=$(realpath "$HOROVOD_NCCL_HOME/lib/libnccl.so")"
    fi
    echo "FLAVOUR=$FLAVOUR"
    echo "WHEEL_DIR=$WHEEL_DIR"
    exit 0
fi

if [[ -n "$WHEEL" ]]; then
    echo "build-horovod: using cached wheel $WHEEL"
else
    echo "build-horovod: building horovod $HOROVOD_VERSION ($FLAVOUR) for torch $TORCH_VERSION"
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
