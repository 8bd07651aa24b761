#!/usr/bin/env bash
# ONNX Runtime CUDA on a lent GPU machine whose device calls carry at most 64 MiB each.
#
# onnxruntime-gpu (>= 1.27 is built for CUDA 13, like the lent machine) is a ~255 MB wheel. Files
# outside the repo stay on a warm machine between calls (it goes back ~30 s after a call), so the
# wheel travels in parts, one per call, in quick succession, and the last call joins, installs and
# checks. Three verbs:
#
#   tools/gpu_ort_check.sh prepare          # HERE: download the wheels, split into .gpu/part-*
#   tools/gpu_ort_check.sh receive PART     # THERE, one call per part, carry=[".gpu/PART"]
#   tools/gpu_ort_check.sh run              # THERE, last call, carry=[".gpu/small"]
#
# `prepare` prints the device calls to make. `run` joins the parts (sha256-checked), installs
# onnxruntime-gpu + diffusers with --no-deps into /tmp/l2p-gpu/site (ONNX Runtime loads the CUDA
# 13 / cuDNN 9 libraries that the machine's PyTorch ships), then in one go:
#   1. the gpu-marked ONNX Runtime CUDA tests (pytest -m "gpu and not tensorrt");
#   2. l2p validate --backend onnxruntime-cuda on an fp32 bundle (bench_step's "medium" FLUX);
#   3. tools/gpu_ort_check.py: a FLUX.1-dev-shaped bf16 transformer, one step on PyTorch eager vs.
#      ONNX Runtime CUDA, `l2p sample --device cuda --backend onnxruntime-cuda` (full and
#      taylorseer2) and the device-resident loop's speed-up, timed in the same call.
# Logs and JSON land in $OUT (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION=${ORT_VERSION:-1.31.1}
DIFFUSERS_VERSION=${DIFFUSERS_VERSION:-$(python3 -c 'import diffusers; print(diffusers.__version__)' 2>/dev/null || echo 0.35.2)}
PY=${PY:-3.12}  # the lent machine's python3
PART_MB=${PART_MB:-40}  # a call carries the working tree (~15 MB) + one part: stay under 64 MiB
STAGE=/tmp/l2p-gpu

case "${1:-}" in
prepare)
    exclude=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$exclude")"
    grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"  # ignored: travels only when carried
    mkdir -p .gpu/small .gpu/wheel && rm -f .gpu/part-* .gpu/small/*
    plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
        "${plat[@]}" -d .gpu/wheel "onnxruntime-gpu==$ORT_VERSION" || exit 1
    python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/small "diffusers==$DIFFUSERS_VERSION" || exit 1
    wheel=$(ls .gpu/wheel/onnxruntime_gpu-"$ORT_VERSION"-*.whl) || exit 1
    split -b "${PART_MB}M" -d "$wheel" .gpu/part-
    basename "$wheel" > .gpu/small/ORT_WHEEL
    sha256sum "$wheel" | cut -d' ' -f1 > .gpu/small/ORT_SHA256
    echo "device calls, in quick succession (each within ~30 s of the last):"
    for p in .gpu/part-*; do
        echo "  run(command='tools/gpu_ort_check.sh receive $(basename "$p")', carry=['$p'], timeout_s=120)"
    done
    echo "  run(command='tools/gpu_ort_check.sh run', carry=['.gpu/small'], timeout_s=600)"
    ;;
receive)
    part=${2:?which part}
    mkdir -p "$STAGE/parts" && cp ".gpu/$part" "$STAGE/parts/$part" && ls -l "$STAGE/parts"
    ;;
run)
    OUT=${OUT:-$STAGE/out}
    mkdir -p "$OUT" "$STAGE/site"
    exec > >(tee "$OUT/gpu_ort_check.log") 2>&1
    wheel="$STAGE/$(cat .gpu/small/ORT_WHEEL)"
    cat "$STAGE"/parts/part-* > "$wheel"
    echo "$(cat .gpu/small/ORT_SHA256)  $wheel" | sha256sum -c || { echo "parts missing or corrupt"; ls -l "$STAGE/parts"; exit 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$STAGE/site" "$wheel" .gpu/small/*.whl || exit 1
    export PYTHONPATH="$STAGE/site:$PWD" PYTHONUNBUFFERED=1
    # the CUDA 13 / cuDNN libraries of the machine's PyTorch (pip's nvidia-* packages)
    libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/**/lib*.so*", recursive=True)})))')
    export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
    python3 -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())'
    nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv
    echo "== 1. gpu-marked ONNX Runtime CUDA tests"
    python3 -m pytest -q -m "gpu and not tensorrt" -p no:cacheprovider tests/engine/test_gpu_backends.py \
        tests/engine/test_cuda_real.py tests/sampling/test_device_loop.py; echo "pytest exit $?"
    echo "== 2. l2p validate --backend onnxruntime-cuda (fp32 bundle: ONNX Runtime CPU is the reference)"
    python3 tools/bench_step.py --configs medium --threads 16 --repeats 3 --work "$STAGE/step" \
        && python3 -m l2p.cli validate "$STAGE/step/bundle-medium" --backend onnxruntime-cuda; echo "validate exit $?"
    echo "== 3. FLUX.1-dev-shaped bf16: PyTorch eager vs. ONNX Runtime CUDA, device-resident loop"
    python3 tools/gpu_ort_check.py --work "$STAGE/work" --out "$OUT" ${CHECK_ARGS:-}; echo "check exit $?"
    ;;
*)
    sed -n 2,21p "$0"; exit 2
    ;;
esac
