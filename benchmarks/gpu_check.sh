#!/usr/bin/env bash
# One prepared GPU check for a single-GPU machine with no network; finishes within 10 minutes.
#
#   bash benchmarks/gpu_check.sh            # the real check (needs CUDA): Qwen2.5-1.5B-shaped model, bf16
#   bash benchmarks/gpu_check.sh --tiny     # the same phases at toy sizes; runs on a CPU (how it is tested)
#
# Phases, each a separate process with its own timeout, all under one overall deadline:
#   env      versions and device
#   kernels  bf16 matmul roofline; per-token stats from hidden states vs from logits (time, peak memory)
#   sweep    random-init Qwen2.5-1.5B config, 256 prompts × 8 samples × ≤1024 tokens with the hf backend:
#            sampled and scored tokens/s, scoring as a fraction of the roofline (2·params FLOPs/token)
#   smoke    `collect` end to end on the saved checkpoint (small)
#   vllm     the gpu-marked vLLM test, only when vllm is importable
#   summary  one table
# Everything is printed; results (JSON per phase + log) go to $OUT when set, else ./gpu_check_out.
# A phase that fails or times out is reported and the script goes on; the exit code is 1 if any failed.
set -euo pipefail

cd "$(dirname "$0")/.."
TINY=()
if [[ "${1:-}" == "--tiny" ]]; then TINY=(--tiny); fi
RESULTS="${OUT:-$PWD/gpu_check_out}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
trap 'rm -rf "$WORK"' EXIT

TOTAL=${GPU_CHECK_TOTAL_S:-570}   # overall deadline, seconds (leaves room under 10 minutes)
START=$SECONDS
FAILED=()

log() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$LOG"; }

# run_phase NAME TIMEOUT_S CMD...: bounded by min(TIMEOUT_S, time left); output printed and logged
run_phase() {
  local name=$1 limit=$2; shift 2
  local left=$((TOTAL - (SECONDS - START)))
  if (( left < limit )); then limit=$left; fi
  if (( limit < 15 )); then
    log "SKIP $name: only ${left}s left of the ${TOTAL}s budget"; FAILED+=("$name(skipped)"); return 0
  fi
  log "BEGIN $name (timeout ${limit}s)"
  local rc=0
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" || rc=${PIPESTATUS[0]}
  if (( rc == 0 )); then log "END $name ok"
  elif (( rc == 124 || rc == 137 )); then log "END $name TIMED OUT after ${limit}s"; FAILED+=("$name(timeout)")
  else log "END $name FAILED (exit $rc)"; FAILED+=("$name(exit $rc)"); fi
  return 0
}

: > "$LOG"
log "results: $RESULTS; work dir: $WORK; python: $PY; ${TINY[*]:-full sizes}"
if [[ ${#TINY[@]} -eq 0 ]] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  log "no CUDA device visible to torch: run with --tiny on a CPU machine"; exit 2
fi
command -v nvidia-smi >/dev/null && run_phase nvidia-smi 20 nvidia-smi

G=(benchmarks/gpu_check.py --results "$RESULTS" "${TINY[@]}")
run_phase env 60 "$PY" "${G[@]}" --phase env
run_phase kernels 100 "$PY" "${G[@]}" --phase kernels
run_phase sweep 360 "$PY" "${G[@]}" --phase sweep --sample-budget "${SAMPLE_BUDGET_S:-220}" --save "$WORK/ckpt"
run_phase smoke 90 "$PY" "${G[@]}" --phase smoke --save "$WORK/ckpt"
if "$PY" -c 'import vllm' >/dev/null 2>&1; then
  run_phase vllm 120 "$PY" -m pytest -q -m gpu tests/capture/test_vllm_backend.py -p no:cacheprovider
else
  log "vllm not installed: the real-vLLM test is not run"
fi
run_phase summary 30 "$PY" "${G[@]}" --phase summary

log "done in $((SECONDS - START))s; failed phases: ${FAILED[*]:-none}"
[[ ${#FAILED[@]} -eq 0 ]]
