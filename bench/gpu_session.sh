#!/usr/bin/env bash
# The checks made on a lent GPU machine, in one call (bench/README.md, "GPU"): the GPU throughput
# benchmark, training throughput with GPU utilisation, the test suite with CUDA present, and the DNG
# folder end to end. Logs go to $OUT (the device tool's folder; out/gpu when run elsewhere), the
# benchmarks' JSON results to $OUT/results (copy them into bench/results/); the summary is printed last. Run from the repository root:
#   bash bench/gpu_session.sh
# On the lent machine, packages its image lacks travel as wheels in .whl/ (rawpy, OpenEXR,
# imagecodecs, pytorch-msssim), and the real test data in .gpu/real (a copy of ../shared/data/real).
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -d .gpu/real ] && export FUSECLI_REAL_DATA=$PWD/.gpu/real

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
    nproc
    python3 -c "import torch, numpy, cv2, rawpy, typer, tifffile; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'rawpy', rawpy.__version__, 'typer', typer.__version__, 'tifffile', tifffile.__version__)"
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "=== $name: rc $? in $((SECONDS - t0)) s" | tee -a "$OUT/steps.log"
}

step bench_gpu 80 python3 bench/bench_gpu.py --megapixels 1 24 --repeat 20
step bench_train 45 python3 bench/bench_train.py --steps 100 --device cuda --workers 8
step pytest 170 python3 -m pytest -v -rfE -p no:cacheprovider -n 8
step bench_fuse 40 python3 bench/bench_fuse.py --cli --no-samples --stacks 5 --repeat 1 --align none
step bench_fuse_aligned 40 python3 bench/bench_fuse.py --cli --no-samples --stacks 5 --repeat 1

mkdir -p "$OUT/results" && cp bench/results/*.json "$OUT/results/" 2>/dev/null  # the figures, as data

echo
cat "$OUT/steps.log"
for f in bench_gpu bench_train pytest bench_fuse bench_fuse_aligned; do
    echo "----- $f"
    case $f in bench_gpu) n=32 ;; pytest) n=14 ;; *) n=5 ;; esac
    grep -v -e PASSED -e SKIPPED -e PytestBenchmark -e "warner(" "$OUT/$f.log" | tail -n $n | cut -c1-160
done
