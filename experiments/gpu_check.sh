#!/usr/bin/env bash
# The accelerator check: correctness first, then the benchmarks, each stage's output written to $OUT as it runs.
#
# Command:  OUT=dir PYTHONPATH=. bash experiments/gpu_check.sh [--dry-run]
#           (from the repository root; on a GPU machine that brings its own JAX and PyTorch and installs nothing)
# Expected: on a GPU, under 8 minutes: stage files 0_env.txt, 1_tests.txt, 2_bench_lm.txt, 3_bench_scan.txt,
#           the benchmarks' bench_lm.json and bench_scan.json and summary.txt in $OUT (7 files), and a last line "gpu_check: all stages passed" (or the stages that
#           failed; a failed stage does not stop the later ones). --dry-run runs the same stages on the CPU with
#           tiny sizes (what CI runs, through tests/test_gpu_check.py).
# Source:   the tests' accelerator-safe subset (tests set the float32 matmul precision they need) and the
#           benchmark scripts' GPU rows (PyTorch on CUDA, jax.experimental.rnn) beside rnn_jax's runners.
set -uo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
WORK=$(mktemp -d)   # the benchmarks' plots and tables stay here; $OUT gets their JSON (few files come back)
export PYTHONPATH="${PYTHONPATH:-.}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # the stages share the GPU with PyTorch
failed=()

stage() {  # stage NAME TIMEOUT_S COMMAND...: runs it, its output to $OUT/NAME.txt (and the console) as it goes
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee "$OUT/$name.txt"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
  local code=${PIPESTATUS[0]}
  echo "== $name: exit $code after $((SECONDS - start)) s" | tee -a "$OUT/$name.txt"
  if [[ $code -ne 0 ]]; then failed+=("$name"); fi
}

if [[ $DRY_RUN -eq 1 ]]; then
  export JAX_PLATFORMS=cpu
  TESTS=(tests/test_mingru.py::test_matches_the_papers_equations)
  LM_ARGS=(--configs notes --cells lstm --implementations fused,fused_bf16,scan_unroll4,torch_cuda,jax_rnn
           --rounds 1 --min-seconds 0.01 --compile-lengths "")
  SCAN_ARGS=(--cells mingru --forms scan,associative --lengths 16 --batch-size 2 --input-size 4 --hidden-size 8
             --rounds 1 --min-seconds 0.01)
else
  TESTS=(tests/test_lstm.py tests/test_gru.py tests/test_cells.py tests/test_runners.py tests/test_fused.py
         tests/test_associative.py tests/test_lm.py tests/test_bidirectional.py tests/test_precision.py
         tests/test_cudnn.py)
  LM_ARGS=(--configs notes,zaremba_small,long --cells lstm,gru
           --implementations fused,fused_bf16,scan_unroll1,scan_unroll4,torch_cuda,torch_cuda_bf16,jax_rnn
           --rounds 2 --min-seconds 0.3
           --compile-lengths "")
  SCAN_ARGS=(--cells mingru,lru --lengths 256,1024,4096,16384 --batch-size 16 --input-size 256 --hidden-size 256
             --rounds 2 --min-seconds 0.2)
fi

stage 0_env 60 python -c "import jax, platform; print('jax', jax.__version__, jax.devices(), platform.processor());
import importlib.util as u; print('torch', __import__('torch').__version__ if u.find_spec('torch') else 'absent')"
stage 1_tests 240 python -m pytest -q -p no:cacheprovider -n 0 -x "${TESTS[@]}"
stage 2_bench_lm 200 python -m experiments.bench_lm --workloads train "${LM_ARGS[@]}" --out "$WORK/bench_lm"
stage 3_bench_scan 150 python -m experiments.bench_scan "${SCAN_ARGS[@]}" --out "$WORK/bench_scan"
cp "$WORK"/bench_lm/bench_lm.json "$WORK"/bench_scan/bench_scan.json "$OUT"/ 2>/dev/null

if [[ ${#failed[@]} -eq 0 ]]; then
  echo "gpu_check: all stages passed" | tee "$OUT/summary.txt"
else
  echo "gpu_check: failed stages: ${failed[*]}" | tee "$OUT/summary.txt"
  exit 1
fi
