#!/usr/bin/env bash
# JPEG and WebP measured here on all of Kodak, reported against CompressAI's published VTM curve
# next to CompressAI's published JPEG and WebP curves. Writes docs/kodak-anchors/.
#   bash scripts/kodak_anchors.sh     (shared data where lic.paths.shared_dir() says)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="$(.venv/bin/python -c "from lic.paths import shared_dir; print(shared_dir())")"
REF="$SHARED/reference/compressai/kodak"
OUT=docs/kodak-anchors
LIC_SHARED="$SHARED" .venv/bin/lic evaluate --dataset kodak --anchors-only --anchors jpeg,webp -o "$OUT"
.venv/bin/lic report "$OUT/jpeg.json" "$OUT/webp.json" "$REF/jpeg.json" "$REF/webp.json" \
    --anchor "$REF/vtm.json" -o "$OUT/report"
