#!/usr/bin/env bash
# Build the nni-xfer trial image (Containerfile) with podman or docker, whichever is installed.
#
#   bash scripts/build_image.sh [--tag nni-xfer:latest] [--base IMAGE]
#                               [--debootstrap-base] [--engine podman|docker] [--git-ref REF]
#
# 1. Wheelhouse: `pip wheel` of this checkout (its working tree, or with --git-ref the committed
#    tree of REF, e.g. HEAD) and its pinned requirements (torch $TORCH_VERSION,
#    torchvision $TORCHVISION_VERSION, nni $NNI_VERSION) into build/image/wheelhouse, on the host
#    (wheels already there are reused: a rebuild needs no index).
# 2. Base: --base IMAGE (default python:<host python X.Y>-slim-bookworm, pulled from Docker Hub), or
#    --debootstrap-base: a Debian bookworm root made with debootstrap from Debian's mirror and
#    imported as localhost/nni-xfer-base:bookworm (no container registry needed; root only).
# 3. `<engine> build -f Containerfile` with build/image as the context; prints size and time.
#
# Environment: PYTHON (the host python that makes the wheels; default .venv/bin/python or python3),
# TORCH_VERSION, TORCHVISION_VERSION, NNI_VERSION; TORCH_INDEX_URL (as for scripts/setup.sh, e.g.
# https://download.pytorch.org/whl/cpu: torch and torchvision from that index, in a wheelhouse of
# their own, build/image-torch-index/). Podman reads CONTAINERS_CONF as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=nni-xfer:latest
BASE=
DEBOOTSTRAP=0
ENGINE=
GIT_REF=
BASE_DEBOOTSTRAP_TAG=localhost/nni-xfer-base:bookworm
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --debootstrap-base) DEBOOTSTRAP=1; shift ;;
    --engine) ENGINE=$2; shift 2 ;;
    --git-ref) GIT_REF=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build_image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$ENGINE" ]; then
  if command -v podman >/dev/null; then ENGINE=podman
  elif command -v docker >/dev/null; then ENGINE=docker
  else echo "build_image.sh: no container engine: install podman or docker" >&2; exit 2; fi
fi
command -v "$ENGINE" >/dev/null || { echo "build_image.sh: '$ENGINE' is not on PATH" >&2; exit 2; }

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYVER=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
NNI_VERSION=${NNI_VERSION:-3.0}
SRC=.
if [ -n "$GIT_REF" ]; then   # the committed tree only (a shared or dirty checkout stays out of the image)
  SRC=build/image/src
  rm -rf "$SRC" && mkdir -p "$SRC"
  git archive "$GIT_REF" | tar -x -C "$SRC"
fi
XFER_VERSION=$("$PYTHON" -c 'import configparser, sys; c = configparser.ConfigParser(); c.read(sys.argv[1]); print(c["metadata"]["version"])' "$SRC/setup.cfg")

t0=$(date +%s)
CONTEXT=build/image
[ -z "${TORCH_INDEX_URL:-}" ] || CONTEXT=build/image-torch-index   # never mixed with PyPI's torch
WH=$CONTEXT/wheelhouse
mkdir -p "$WH"
rm -f "$WH"/nni_xfer-*.whl   # always this checkout's code
echo "== wheelhouse ($WH): nni-xfer $XFER_VERSION${GIT_REF:+ (git $GIT_REF)}, torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION, nni $NNI_VERSION (python $PYVER)"
if [ -n "${TORCH_INDEX_URL:-}" ]; then   # torch's own builds first; their dependencies come from PyPI below
  "$PYTHON" -m pip wheel -q --no-deps --index-url "$TORCH_INDEX_URL" -w "$WH" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
"$PYTHON" -m pip wheel -q --find-links "$WH" -w "$WH" \
  "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "nni==$NNI_VERSION" 'setuptools<81' "$SRC"
[ "$SRC" = . ] || rm -rf "$SRC"
# Lock: exactly what pip resolves for the pins from this wheelhouse (the image installs that list,
# then nni-xfer without dependencies); content hashes are the build cache keys of the two layers.
XFER_WHEEL=$(ls "$WH"/nni_xfer-"$XFER_VERSION"-*.whl)
"$PYTHON" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$WH" --report "$WH/resolve.json" \
  "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "nni==$NNI_VERSION" "$XFER_WHEEL" 2>&1 | grep -v '^WARNING: Location' || true
read -r DEPS XFER < <("$PYTHON" - "$WH" "$XFER_WHEEL" <<'PY'
import hashlib, json, sys, zipfile
wh, xfer = sys.argv[1], sys.argv[2]
items = json.load(open(f'{wh}/resolve.json'))['install']
reqs = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items
              if i['metadata']['name'] != 'nni-xfer')
open(f'{wh}/requirements.txt', 'w').write('\n'.join(reqs) + '\n')
h = hashlib.sha256()
with zipfile.ZipFile(xfer) as z:   # the files, not the zip (whose timestamps change every build)
    for name in sorted(z.namelist()):
        h.update(name.encode() + b'\0' + hashlib.sha256(z.read(name)).digest())
print(hashlib.sha256('\n'.join(reqs).encode()).hexdigest()[:16], h.hexdigest()[:16])
PY
)
rm -f "$WH/resolve.json"
t1=$(date +%s)
echo "   $(du -sh "$WH" | cut -f1), $(wc -l < "$WH/requirements.txt") locked dependencies, $((t1 - t0)) s"

if [ "$DEBOOTSTRAP" = 1 ]; then
  BASE=${BASE:-$BASE_DEBOOTSTRAP_TAG}
  if "$ENGINE" image inspect "$BASE" >/dev/null 2>&1; then
    echo "== base: $BASE (exists)"
  else
    command -v debootstrap >/dev/null || { echo "build_image.sh: --debootstrap-base needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "build_image.sh: --debootstrap-base needs root (debootstrap)" >&2; exit 2; }
    ROOT=build/base-root
    rm -rf "$ROOT"
    echo "== base: debootstrap bookworm -> $BASE"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" >build/debootstrap.log 2>&1 \
      || { echo "build_image.sh: debootstrap failed, see build/debootstrap.log" >&2; exit 1; }
    tar -C "$ROOT" -c . | "$ENGINE" import - "$BASE" >/dev/null
    rm -rf "$ROOT"
  fi
fi
BASE=${BASE:-docker.io/library/python:$PYVER-slim-bookworm}
t2=$(date +%s)

echo "== $ENGINE build -t $TAG (BASE=$BASE)"
build_env=()
[ "$ENGINE" = docker ] && build_env=(env DOCKER_BUILDKIT=1)
"${build_env[@]}" "$ENGINE" build -f Containerfile --build-arg "BASE=$BASE" --build-arg "DEPS=$DEPS" \
  --build-arg "XFER=$XFER" -t "$TAG" "$CONTEXT"
t3=$(date +%s)
size=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")
echo "== built $TAG: $((size / 1000000)) MB; wheelhouse $((t1 - t0)) s, base $((t2 - t1)) s, image build $((t3 - t2)) s"
