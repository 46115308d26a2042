#!/usr/bin/env bash
# The staff recipe in one command (made for the GPU machine), run from anywhere:
#
#   bash staff/run_gpu.sh DATA_DIR OUT_DIR [extra flags for python -m staff.recipe]
#
# DATA_DIR holds cifar-10-batches-py/. The recipe's own folder (the 81 MB teacher and final .ptmodel
# files, the encodings/ folder) is $WORK (default: a new temporary folder). OUT_DIR gets only small
# files: recipe.log (written as it runs), steps.jsonl, table.txt, encodings.tar.gz (huffman_decode_model
# turns it back into the exact final model) and sensitivity.tar.gz (the scans of the dense teacher,
# run beside the pruning as soon as the teacher is trained).
# Environment: PYTHON (default python3), DEVICE (default auto), WORK, RECIPE_TIMEOUT (seconds, 0 = none),
# SENSITIVITY (1 = run the scans, the default; 0 = skip them), SENSITIVITY_FLAGS (extra flags for them).
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,12p' "$0"
    exit 2
fi
data=$(realpath "$1")
out=$(realpath -m "$2")
shift 2
work=$(realpath -m "${WORK:-$(mktemp -d)}")
python=${PYTHON:-python3}
device=${DEVICE:-auto}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out" "$work"
rm -f "$work/teacher.ptmodel" "$work/.recipe-done"

scan_teacher() {  # waits for the recipe's dense model, then scans it
    while [ ! -f "$work/teacher.ptmodel" ]; do
        if [ -f "$work/.recipe-done" ]; then return 0; fi
        sleep 5
    done
    mkdir -p "$work/sensitivity"
    (cd "$repo" && "$python" -m grader sensitivity "$work/teacher.ptmodel" --data-dir "$data" \
        --out "$work/sensitivity" --device "$device" ${SENSITIVITY_FLAGS:-}) > "$work/sensitivity/log.txt" 2>&1 || true
    tar -czf "$out/sensitivity.tar.gz" -C "$work" sensitivity
}
scanner=""
if [ "${SENSITIVITY:-1}" = 1 ]; then
    scan_teacher &
    scanner=$!
fi

status=0
(cd "$repo" && PYTHONUNBUFFERED=1 timeout "${RECIPE_TIMEOUT:-0}" "$python" -m staff.recipe \
    --data-dir "$data" --out "$work" --device "$device" --no-progress "$@") 2>&1 | tee "$out/recipe.log" \
    || status=$?
touch "$work/.recipe-done"

for name in steps.jsonl table.txt; do
    if [ -f "$work/$name" ]; then cp "$work/$name" "$out/"; fi
done
if [ -f "$work/table.txt" ]; then tar -czf "$out/encodings.tar.gz" -C "$work" encodings; fi
if [ -n "$scanner" ]; then wait "$scanner"; fi
echo "work folder: $work; small outputs: $out"
exit "$status"
