#!/usr/bin/env bash
# `make arm-check`: install the device runtime in an emulated Raspberry Pi OS (Debian bookworm
# arm64, Python 3.11) root exactly as a Pi user would, run every model of real rpi4/rpi5 bundles
# there and compare the outputs with the same run on this x86 host. Needs root (chroot, binfmt).
# Env: EDGE_CACHE_DIR (default ~/.cache/edgesight): cached root, wheels, bundles and key.
#      PY: host Python with the export tool-chain (default .venv/bin/python).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${EDGE_CACHE_DIR:-$HOME/.cache/edgesight}
root=$cache/arm-root
wheels=$cache/arm-wheels/cp311
work=$cache/arm-check
PY=${PY:-$repo/.venv/bin/python}
image=${ARM_IMAGE:-$repo/../shared/data/coco128/images/000000000139.jpg}
# qemu's default "max" CPU advertises features no Pi has (SVE, SME, i8mm ...); on it ai-edge-litert's
# int8 kernels gave wrong YuNet outputs (objectness off by 0.98). Emulate the Pi 4's Cortex-A72
# (cortex-a76, the Pi 5's, matched x86 as well).
qcpu=${ARM_QEMU_CPU:-cortex-a72}
t_all=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t_all )) s] $*"; }

stamp "1/7 arm64 root ($root)"
"$here/build-root.sh" "$root"

stamp "2/7 aarch64 wheels for cp311 (host pip download)"
mkdir -p "$wheels"
plats=(--platform manylinux2014_aarch64)
for n in 17 26 27 28 29 30 31 32 33 34 35 36; do plats+=(--platform "manylinux_2_${n}_aarch64"); done
python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
  "${plats[@]}" -d "$wheels" 'numpy>=1.23' 'opencv-python-headless>=4.8' 'msgspec>=0.18' 'onnxruntime>=1.16' \
  'ai-edge-litert>=1.0' 'cryptography>=41'
rm -f "$wheels"/edgesight-*.whl
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$wheels" "$repo" 2>/dev/null \
  || python3 -m pip wheel -q --no-deps -w "$wheels" "$repo"

stamp "3/7 signed bundles for rpi4 and rpi5 (host build, cached)"
mkdir -p "$work"
[ -f "$work/key/bundle_signing.key" ] || "$PY" -m export.cli keygen --out "$work/key"
# rpi4 with every role (each role checked once); rpi5 with the detector only, to keep it short;
# jetson-orin-nano (ONNX: the bundles onnxruntime runs) with the detector and the face embedder.
for spec in "rpi4:" "rpi5:--only detector" "jetson_orin_nano:--only detector,face_embedder"; do
  prof=${spec%%:*}; only=${spec#*:}
  if [ ! -f "$work/bundles/$prof/manifest.json" ]; then
    # shellcheck disable=SC2086
    (cd "$repo" && "$PY" -m export.cli build -q --profile "firmware_configs/$prof.toml" $only \
       --out "$work/bundles" --key "$work/key/bundle_signing.key")
  fi
done

stamp "4/7 pip install edgesight[onnx,litert,crypto] in the arm64 root (emulated)"
rm -rf "$root/opt/check" && mkdir -p "$root/opt/check"
cp -r "$wheels" "$root/opt/check/wheels"
cp -r "$work/bundles" "$work/key" "$root/opt/check/"
cp "$image" "$root/opt/check/image.jpg"
cp "$here/dump_outputs.py" "$root/opt/check/"
data=$repo/../shared/data
mkdir -p "$root/opt/check/data/coco128" "$root/opt/check/data/faces"
cp -r "$data/coco128/images" "$root/opt/check/data/coco128/"
cp -r "$data/faces/deepface" "$root/opt/check/data/faces/"
cp -r "$data/antispoof" "$root/opt/check/data/"
cp /etc/ssl/certs/ca-certificates.crt "$root/opt/check/ca.crt"
t0=$(date +%s)
chroot "$root" /usr/bin/env -i QEMU_CPU="$qcpu" PATH=/usr/bin:/bin HOME=/root /bin/sh -ec '
  rm -rf /opt/venv && python3 -m venv /opt/venv
  /opt/venv/bin/pip install -q --no-index --find-links /opt/check/wheels "edgesight[onnx,litert,crypto]"'
stamp "   install took $(( $(date +%s) - t0 )) s (emulation)"

stamp "5/7 verify + run every model: x86 host, then aarch64 (emulated)"
"$PY" "$here/dump_outputs.py" --key "$work/key/bundle_signing.pub" --image "$image" \
  --data "$data" --out "$work/x86.npz" "$work/bundles/rpi4" "$work/bundles/rpi5" "$work/bundles/jetson_orin_nano"
t0=$(date +%s)
chroot "$root" /usr/bin/env -i QEMU_CPU="$qcpu" PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root \
  /opt/venv/bin/python /opt/check/dump_outputs.py --key /opt/check/key/bundle_signing.pub \
  --image /opt/check/image.jpg --data /opt/check/data --out /opt/check/arm.npz /opt/check/bundles/rpi4 /opt/check/bundles/rpi5 /opt/check/bundles/jetson_orin_nano
stamp "   aarch64 ($qcpu) run took $(( $(date +%s) - t0 )) s (emulation, not a device figure)"
stamp "   release self-test (edge selftest: golden inputs recorded on x86 at build, compared on aarch64)"
for b in rpi4 rpi5 jetson_orin_nano; do
  chroot "$root" /usr/bin/env -i QEMU_CPU="$qcpu" PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root \
    /opt/venv/bin/edge selftest --bundle "/opt/check/bundles/$b" --trust /opt/check/key/bundle_signing.pub \
    || cmp_rc=$?
done

stamp "6/7 compare aarch64 with x86; then the same with tflite-runtime (edgesight[tflite-legacy])"
"$PY" "$here/compare_outputs.py" "$work/x86.npz" "$root/opt/check/arm.npz" || cmp_rc=$?
python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
  "${plats[@]}" -d "$wheels" 'tflite-runtime>=2.13' 'numpy<2' 'opencv-python-headless>=4.8,<4.11' 'msgspec>=0.18'
cp "$wheels"/*.whl "$root/opt/check/wheels/"
t0=$(date +%s)
chroot "$root" /usr/bin/env -i QEMU_CPU="$qcpu" PATH=/usr/bin:/bin HOME=/root /bin/sh -ec '
  rm -rf /opt/venv-legacy && python3 -m venv /opt/venv-legacy
  /opt/venv-legacy/bin/pip install -q --no-index --find-links /opt/check/wheels \
    "edgesight[tflite-legacy,crypto]" "opencv-python-headless<4.11"
  /opt/venv-legacy/bin/python /opt/check/dump_outputs.py --key /opt/check/key/bundle_signing.pub \
    --image /opt/check/image.jpg --data /opt/check/data --out /opt/check/arm-legacy.npz \
    /opt/check/bundles/rpi4 /opt/check/bundles/rpi5
  /opt/venv-legacy/bin/edge selftest --bundle /opt/check/bundles/rpi4 --trust /opt/check/key/bundle_signing.pub'
stamp "   tflite-runtime install + run took $(( $(date +%s) - t0 )) s (emulation)"
"$PY" "$here/compare_outputs.py" --only-litert --bundles rpi4,rpi5 --raw-informational "$work/x86.npz" "$root/opt/check/arm-legacy.npz" || cmp_rc=$?
stamp "7/7 a Pi install without LiteRT must say so (pip uninstall ai-edge-litert, then edge run)"
tfl=$(cd "$root/opt/check" && ls bundles/rpi4/*/*.tflite bundles/rpi4/*.tflite 2>/dev/null | head -n1 || true)
chroot "$root" /opt/venv/bin/pip uninstall -q -y ai-edge-litert
set +e
msg=$(chroot "$root" /usr/bin/env -i QEMU_CPU="$qcpu" PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root \
  /opt/venv/bin/edge run "/opt/check/$tfl" /opt/check/image.jpg 2>&1)
rc=$?
set -e
echo "   edge run without LiteRT: exit $rc: $(echo "$msg" | tail -n1)"
if [ "$rc" = 0 ] || ! echo "$msg" | grep -q "ai-edge-litert" || echo "$msg" | grep -q Traceback; then
  echo "error: a missing LiteRT is not reported clearly" >&2; exit 1
fi
stamp "arm-check done (total wall time, host + emulation)"
exit "${cmp_rc:-0}"
