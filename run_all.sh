#!/usr/bin/env bash
# adaswitch-kit: set up the environment if needed, then run the main job or the tests.
#
#   ./run_all.sh                      # every table and figure of the default `cpu` profile (no GPU, no network)
#   ./run_all.sh --profile smoke      # the same pipeline in minutes
#   ./run_all.sh --only table1,fig6 --jobs 2 --dry-run   # a subset, side by side, just the plan
#   ./run_all.sh --test               # the test suite (extra arguments go to pytest)
#   ./run_all.sh --profile colab --teacher ~/models/qwen-1.5b --student ~/models/qwen-0.5b --data-dir ~/data
#
# When no environment with the kit is active, a .venv is created here and the kit installed into it
# (torch==2.13.0 first if torch is missing; an existing torch, as on Colab, is kept).
set -euo pipefail
kit="$(cd "$(dirname "$0")" && pwd)"

usage() {
  cat <<'USAGE'
usage: ./run_all.sh [--profile NAME] [--only ARTIFACTS] [--jobs N] [--dry-run] [--prune] [--test [PYTEST ARGS...]] [--help]

  --profile NAME   smoke | cpu (default) | cpu-claims | cpu-full | colab | paper  (see README: Profiles)
  --only LIST      comma-separated subset of: table1,table2,fig3,fig4,fig5,fig6,fig7,fig8,fig9
  --jobs N         runs side by side, each with cores/N torch threads (default: one per core
                   for the offline profiles, 1 for Hub models)
  --dry-run        print the plan (every job, finished or not) and its estimated time
  --prune          delete the run records the profile no longer plans (after a profile change), then stop
  --teacher M      the teacher: a Hub id or a local model folder (Hub pairs; default: the pair's own)
  --student M      the base student and its tokenizer: a Hub id or a local model folder
  --revision R     a Hub branch, tag or commit, pinned for both models
  --data-dir D     a folder of local copies of the Hub tasks' files (README: GPU)
  --set F=V        override a profile field (repeatable), e.g. --set kd_steps=50 --set pairs=qwen
  --results-dir D  where tables, figures and run records go (default: results)
  --cache-dir D    where prepared pairs are kept (default: .cache/models)
  --test           run the test suite instead of the main job; later arguments go to pytest
                   (e.g. ./run_all.sh --test -m slow)
  --help           this text

Finished runs are skipped: an interrupted run_all continues where it stopped. Progress is one
line per job; each notebook's output goes to results/<profile>/logs/.
USAGE
}

# a path that exists is made absolute (the pipeline works in the kit's folder); a Hub id stays
located() { if [ -e "$1" ]; then (cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")"); else echo "$1"; fi; }

profile=cpu
mode=run
extra=()
pipeline_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile|--only|--jobs)
               [ $# -ge 2 ] || { echo "run_all.sh: $1 needs a value; try ./run_all.sh --help" >&2; exit 2; }
               if [ "$1" = --profile ]; then profile="$2"; else pipeline_args+=("$1" "$2"); fi; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --only=*|--jobs=*) pipeline_args+=("$1"); shift ;;
    --teacher|--student|--data-dir|--results-dir|--cache-dir)
               [ $# -ge 2 ] || { echo "run_all.sh: $1 needs a value; try ./run_all.sh --help" >&2; exit 2; }
               pipeline_args+=("$1" "$(located "$2")"); shift 2 ;;
    --revision|--set)
               [ $# -ge 2 ] || { echo "run_all.sh: $1 needs a value; try ./run_all.sh --help" >&2; exit 2; }
               pipeline_args+=("$1" "$2"); shift 2 ;;
    --dry-run|--prune) pipeline_args+=("$1"); shift ;;
    --test) mode=test; shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1'; try ./run_all.sh --help" >&2; exit 2 ;;
  esac
done

cd "$kit"
stamp() { cat pyproject.toml | sha256sum | cut -c1-16; }

setup_env() {
  # An active virtualenv or conda env that already has the kit: use it as it is.
  if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && python -c "import adaswitch_lib, papermill, pytest" 2>/dev/null; then
    PY=python; return
  fi
  PY=.venv/bin/python
  if [ -x "$PY" ] && [ "$(cat .venv/.kit-installed 2>/dev/null)" = "$(stamp)" ]; then return; fi
  command -v python3 >/dev/null || { echo "run_all.sh: python3 (3.10 or newer) is required" >&2; exit 2; }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "run_all.sh: Python 3.10 or newer is required" >&2; exit 2; }
  local start=$SECONDS log=.venv/install.log
  if [ ! -x "$PY" ]; then
    echo "==> creating .venv"
    # Keep a torch the system already has (a CUDA build on Colab, say) instead of downloading another.
    if python3 -c "import torch" 2>/dev/null; then python3 -m venv --system-site-packages .venv; else python3 -m venv .venv; fi
  fi
  echo "==> installing the kit into .venv (log: $log)"
  {
    "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install torch==2.13.0
    "$PY" -m pip install -e ".[notebooks,dev]"
  } >"$log" 2>&1 || { tail -n 20 "$log" >&2; echo "run_all.sh: installation failed; see $log" >&2; exit 1; }
  stamp > .venv/.kit-installed
  echo "==> environment ready in $((SECONDS - start)) s"
}

setup_env
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "$mode" = test ]; then
  exec "$PY" -m pytest "${extra[@]}"
fi
exec "$PY" -m adaswitch_lib.pipeline --profile "$profile" ${pipeline_args[@]+"${pipeline_args[@]}"}
