#!/usr/bin/env bash
# The checks that need a GPU, in one run capped at 10 minutes (the caps below add up to 600 s) on one 80 GB-class card: the sampler
# at Qwen2.5-1.5B -> 0.5B shapes in the three switch regimes (each capped, so a stall shows as
# TIMEOUT instead of hanging the rest), one distillation step of each method at Qwen2.5-3B -> 0.5B
# shapes in bf16, the loss's peak GPU memory at vocab 151,936, and every phase of a colab-shaped
# run (teacher SFT, evaluation, each method, validation) against the memory estimator.
#
#   benchmarks/gpu_checks.sh [OUT_DIR]      # default results/gpu-checks; one log per check there
#
# Random-init models built from the published configs: no weights, no network. Needs torch with
# CUDA, transformers, accelerate and peft; the kit is imported from this folder (no install
# needed). PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu-checks}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
status=0

check() {  # check NAME SECONDS COMMAND...: run it with a time cap, log to $out/NAME.log, say how it ended
  local name=$1 seconds=$2 start=$SECONDS
  shift 2
  echo "==> $name: $*"
  timeout "$seconds" "$@" 2>&1 | grep -v -e "FutureWarning" -e "forward_call" | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 124 ]; then echo "==> $name: TIMEOUT after ${seconds} s" | tee -a "$out/$name.log"; status=1
  elif [ "$rc" -ne 0 ]; then echo "==> $name: FAILED (exit $rc)" | tee -a "$out/$name.log"; status=1
  else echo "==> $name: done in $((SECONDS - start)) s"; fi
}

"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" | tee "$out/versions.log"
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
  { echo "gpu_checks.sh: no CUDA device visible to torch; nothing to check" >&2; exit 2; }

sampler=(benchmarks/bench_sampler.py --device cuda --dtype bfloat16 --teacher-shape 28,1536,12,2,8960
         --student-shape 24,896,14,2,4864 --vocab 151936 --batch 16 --prompt-tokens 128 --new-tokens 96
         --head-scale 4 --draft-chunk 8 --repeats 2)
check sampler-no-switch 90 "$py" "${sampler[@]}" --regimes "no switch"
check sampler-late-switch 90 "$py" "${sampler[@]}" --regimes "late switch"
check sampler-early-switch 90 "$py" "${sampler[@]}" --regimes "early switch"
check step-qwen3b-0.5b 150 "$py" benchmarks/bench_step.py --teacher-shape 36,2048,16,2,11008 \
  --student-shape 24,896,14,2,4864 --vocab 151936 --teacher-dtype bfloat16 --batch 8 --new-tokens 64 \
  --steps 4 --repeats 1 --methods on_policy,off_policy,skd,adaswitch
check loss-memory 30 "$py" benchmarks/bench_loss.py --device cuda
# each phase of a colab-shaped run (teacher SFT by LoRA, evaluation, 2 steps of every method, the
# validation loss): seconds and peak memory beside the memory estimator's figure
check phases-colab 150 "$py" benchmarks/bench_phases.py --device cuda --profile colab --pair qwen-small --task gsm8k --steps 1
# on a 16 GB card (a T4), run the same with --set kd_optimizer=adamw_8bit: the route the estimator names
exit $status
