#!/usr/bin/env bash
# The GPU check: every GPU figure of this project in one run, within 8 minutes on one
# H100 or H200. Each step has its own time limit and the limits add up to less than 8
# minutes; a step that fails or runs out is reported at the end and the others still run.
#
#   bash bench/gpu_check.sh             # run on cuda and print every figure
#   bash bench/gpu_check.sh --dry-run   # list the steps and their limits; runs nothing
#
# Steps: the fast tests with `pytest --device cuda`; every benchmark in bench/ that takes
# --device, with --device cuda (the others are listed as skipped); the CIFAR-scale case
# (bench_cifar_scale.py: ResNet-18 w=16 top-20 Hessian on 10,000 CIFAR-shaped examples and
# a 21x21 adversarial surface on 1,000, with time and peak memory); and the error of a
# bf16 surface against fp32 (`landscape surface --precision`, bench/surface_error.py).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

BUDGET_S=480             # the whole check
TESTS_S=150              # pytest on the fast tests
BENCH_POOL_S=170         # shared by the --device benchmarks
CIFAR_S=110              # the CIFAR-scale case
PRECISION_S=45           # training, two surfaces and their comparison
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

failures=()
planned=0
quoted() { printf '%q ' "$@"; }
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    planned=$((planned + limit))
    if ((DRY)); then
        printf '%-22s %4d s  %s\n' "$name" "$limit" "$(quoted "$@")"
        return 0
    fi
    echo
    echo "=== $name (limit $limit s): $*"
    local start=$SECONDS rc=0
    timeout "$limit" "$@" || rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    local why="exit $rc"
    ((rc == 124)) && why+=", out of time"
    ((rc == 0)) || failures+=("$name ($why)")
}

if ((!DRY)); then
    if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        echo "Error: no CUDA device here; bash bench/gpu_check.sh --dry-run lists the steps" >&2
        exit 2
    fi
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
else
    WORK=/tmp/gpu_check
    echo "gpu_check.sh --dry-run: the steps, their time limits and commands"
fi

step tests "$TESTS_S" "$PY" -m pytest -q -m "not slow" --device cuda -p no:cacheprovider

benches=()
for file in bench/bench_*.py; do
    [[ $file == bench/bench_cifar_scale.py ]] && continue
    if grep -qE 'add_argument\(\s*"--device"' "$file"; then
        benches+=("$file")
    else
        echo "skip $file: it takes no --device (a CPU-only benchmark)"
    fi
done
per_bench=$((BENCH_POOL_S / ${#benches[@]}))
for file in "${benches[@]}"; do
    step "$(basename "$file" .py)" "$per_bench" "$PY" "$file" --device cuda
done

step cifar-scale "$CIFAR_S" "$PY" bench/bench_cifar_scale.py --device cuda

show_or_run() {  # a sub-command of a step: printed by --dry-run, else run
    if ((DRY)); then
        printf '%24s %s\n' "" "$(quoted "$@")"
    else
        "$@"
    fi
}
precision() {
    local model=$WORK/lenet results=$WORK/precision.h5
    show_or_run "$PY" -m landscape train --dataset digits --arch lenet --width 4 --epochs 3 \
        --eps 0.1 --out "$model" --device cuda || return
    for p in fp32 bf16; do
        show_or_run "$PY" -m landscape surface "$model/final.pt" --eps 0.1 --dim 2 \
            --range -1:1:11 --samples 1000 --precision "$p" --name "$p" --out "$results" \
            --device cuda || return
    done
    show_or_run "$PY" bench/surface_error.py "$results" /surface/fp32 /surface/bf16
}
export -f precision show_or_run quoted
export PY WORK DRY
step bf16-vs-fp32 "$PRECISION_S" bash -c precision
((DRY)) && precision

echo
echo "time limits add up to $planned s of the $BUDGET_S s budget"
if ((planned > BUDGET_S)); then
    echo "Error: the steps' limits exceed the budget" >&2
    exit 1
fi
if ((${#failures[@]})); then
    printf 'failed: %s\n' "${failures[@]}"
    exit 1
fi
((DRY)) || echo "every step passed"
