#!/usr/bin/env bash
# Download the wheels of requirements-vllm-0.23.0-cp312.txt (on a machine WITH PyPI) and pack them
# into carry batches .whl/batch1 ... .whl/batchN, each <= BATCH_MIB (60) MiB, so that one device
# transfer carries one batch. Files over PART_MIB (59) MiB are split into parts; every batch also
# holds SHA256SUMS (sha256 of each whole wheel) and a BATCH-K-of-N marker.
#
#   bash tools/gpu-wheelhouse/fetch.sh            # from the repository root (or anywhere)
#
# Env: WHEELHOUSE (default <repo>/.whl), BATCH_MIB (60), PART_MIB (59), PYTHON (python3).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQ=$HERE/requirements-vllm-0.23.0-cp312.txt
OUT=${WHEELHOUSE:-$ROOT/.whl}
BATCH_MIB=${BATCH_MIB:-60}
PART_MIB=${PART_MIB:-59}
PY=${PYTHON:-python3}
WHEELS=$OUT/wheels

mkdir -p "$WHEELS"
REQS=$(mktemp)
trap 'rm -f "$REQS"' EXIT
sed 's/#.*//; s/[[:space:]]//g' "$REQ" | grep -v '^$' > "$REQS"
echo "== downloading $(wc -l < "$REQS") wheels into $WHEELS"
PLATS=""
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATS="$PLATS --platform $p"
done
# shellcheck disable=SC2086
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none $PLATS -d "$WHEELS" -r "$REQS"

echo "== selecting, hashing and packing"
"$PY" - "$REQS" "$WHEELS" "$OUT" "$BATCH_MIB" "$PART_MIB" <<'PYEOF'
import hashlib, os, re, shutil, subprocess, sys

reqs, wheels, out, batch_mib, part_mib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
MiB = 1 << 20

def norm(s):
    return re.sub(r"[-_.]+", "-", s).lower()

want = {}
for line in open(reqs):
    name, ver = line.strip().split("==")
    want[norm(name)] = ver

# wheel file name: name-version(-build)?-py-abi-plat.whl ; match on normalized name + version
chosen = {}
for f in sorted(os.listdir(wheels)):
    if not f.endswith(".whl"):
        continue
    parts = f[:-4].split("-")
    name, ver = norm(parts[0]), parts[1]
    if name in want and want[name] == ver:
        if name in chosen:
            sys.exit(f"two wheels for {name}=={ver}: {chosen[name]} and {f}")
        chosen[name] = f
missing = sorted(set(want) - set(chosen))
if missing:
    sys.exit(f"no wheel downloaded for: {missing}")
stale = sorted(f for f in os.listdir(wheels) if f.endswith(".whl") and f not in chosen.values())
if stale:
    print(f"(ignoring {len(stale)} wheel(s) in {wheels} not in the list: {stale})")

# manifest: sha256 of every whole wheel, in sha256sum's format
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

files = sorted(chosen.values())
manifest = "".join(f"{sha(os.path.join(wheels, f))}  {f}\n" for f in files)
with open(os.path.join(out, "SHA256SUMS"), "w") as fh:
    fh.write(manifest)

# pieces: whole wheels, or parts <= part_mib made with split
parts_dir = os.path.join(out, "parts")
shutil.rmtree(parts_dir, ignore_errors=True)
os.makedirs(parts_dir)
pieces = []  # (size, path, name)
for f in files:
    p = os.path.join(wheels, f)
    size = os.path.getsize(p)
    if size > part_mib * MiB:
        subprocess.run(["split", "-b", f"{part_mib}m", "-d", "-a", "2", p, os.path.join(parts_dir, f + ".part")], check=True)
        for q in sorted(os.listdir(parts_dir)):
            if q.startswith(f + ".part"):
                pieces.append((os.path.getsize(os.path.join(parts_dir, q)), os.path.join(parts_dir, q), q))
    else:
        pieces.append((size, p, f))

# first-fit decreasing into bins of batch_mib, leaving room for the manifest and the marker
cap = batch_mib * MiB - len(manifest.encode()) - 4096
bins = []  # [used, [pieces]]
for piece in sorted(pieces, key=lambda x: (-x[0], x[2])):
    for b in bins:
        if b[0] + piece[0] <= cap:
            b[0] += piece[0]
            b[1].append(piece)
            break
    else:
        bins.append([piece[0], [piece]])

for d in os.listdir(out):
    if re.fullmatch(r"batch\d+", d):
        shutil.rmtree(os.path.join(out, d))
n = len(bins)
total = 0
for k, (used, items) in enumerate(bins, 1):
    bdir = os.path.join(out, f"batch{k}")
    os.makedirs(bdir)
    for _, src, name in items:
        try:
            os.link(src, os.path.join(bdir, name))
        except OSError:
            shutil.copy2(src, os.path.join(bdir, name))
    shutil.copy2(os.path.join(out, "SHA256SUMS"), os.path.join(bdir, "SHA256SUMS"))
    with open(os.path.join(bdir, f"BATCH-{k}-of-{n}"), "w") as fh:
        fh.write("".join(f"{name}\n" for _, _, name in items))
    size = sum(os.path.getsize(os.path.join(bdir, x)) for x in os.listdir(bdir))
    total += size
    assert size <= batch_mib * MiB, (bdir, size)
    print(f"batch{k}: {size / MiB:6.2f} MiB  {len(items):3d} files  ({', '.join(sorted(x[2] for x in items))[:150]}...)")
print(f"{len(files)} wheels, {sum(os.path.getsize(os.path.join(wheels, f)) for f in files) / MiB:.1f} MiB; "
      f"{n} batches, {total / MiB:.1f} MiB in all; manifest {os.path.join(out, 'SHA256SUMS')}")
PYEOF
