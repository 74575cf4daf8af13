#!/usr/bin/env bash
# Regenerate docs/examples/: run every shipped config (full size) and keep each sweep's report.md and
# comparison figures. Usage: bash docs/make-examples.sh [RESULTS_DIR]   (default: results)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results}
for config in configs/*.yaml; do
  name=$(basename "$config" .yaml)
  actstats sweep "$config" --out "$out" --quiet
  rm -rf "docs/examples/$name"
  mkdir -p "docs/examples/$name"
  cp "$out/$name"/report.md "$out/$name"/*.png "docs/examples/$name/"
done
# the mean-field phase diagram of `actstats theory` (README, "Theory beside measurement")
actstats theory --act tanh --out "$out" --quiet
mkdir -p docs/examples/theory
cp "$out/theory-tanh/phase.png" docs/examples/theory/phase-tanh.png
echo "docs/examples/ regenerated from $out/"
