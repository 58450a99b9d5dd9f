#!/usr/bin/env bash
# Download, here (PyPI reachable), the wheels benchmarks/gpu_check.sh needs on the GPU machine
# (Python 3.12, x86-64, no internet) beyond its image: pydantic (the job model), pydicom (the
# source readers), zarr and its codecs (the real store write instead of the floor). Versions as
# the project's environment uses them. Then carry the folder (device tool: carry [".whl"]).
#
#   bash benchmarks/gpu_wheels.sh [FOLDER]      # default .whl (git ignores it: its own .gitignore)
set -euo pipefail
DEST=${1:-.whl}
mkdir -p "$DEST"
echo "*" > "$DEST/.gitignore"   # git ignores the folder, the device tool carries it when named
PY=${PYTHON:-python3}
for wheel in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
             typing-inspection==0.4.5 pydicom==3.0.2 zarr==3.1.6 numcodecs==0.16.6 \
             donfig==0.8.1.post1 google-crc32c==1.9.0; do
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST" "$wheel"
done
ls -l "$DEST"
