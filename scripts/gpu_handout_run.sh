#!/usr/bin/env bash
# Run the handout's three scripts on the full CIFAR-10 on a GPU machine, for
# one or more configurations in parallel, and collect the small outputs.
#   bash scripts/gpu_handout_run.sh DATA_DIR OUT_DIR NAME="FLAGS" [NAME="FLAGS" ...]
# Each configuration NAME runs `pruning.py FLAGS`, then `weight_share.py`,
# then `huffman_encode.py`, in its own folder OUT_DIR/NAME (log.txt, run.log,
# encodings/, timings). The .ptmodel files stay behind (81 MB each); the
# encodings decode into the exact final model with huffman_decode_model.
set -uo pipefail
data=$1; out=$2; shift 2
here=$(cd "$(dirname "$0")/../solutions" && pwd)
run_one() {
    local name=$1 flags=$2 dir=$out/$1
    mkdir -p "$dir"
    cd "$here"
    local common="--data-dir $data --saves-dir $dir/saves --log $dir/log.txt"
    local t0=$(date +%s)
    TQDM_DISABLE=1 python3 pruning.py $common $flags > "$dir/run.log" 2>&1 || echo "$name: pruning.py failed" >> "$dir/run.log"
    local t1=$(date +%s)
    TQDM_DISABLE=1 python3 weight_share.py $common >> "$dir/run.log" 2>&1
    local t2=$(date +%s)
    TQDM_DISABLE=1 python3 huffman_encode.py $common --encodings-dir "$dir/encodings" >> "$dir/run.log" 2>&1
    local t3=$(date +%s)
    echo "pruning_s $((t1 - t0)) weight_share_s $((t2 - t1)) huffman_s $((t3 - t2))" >> "$dir/log.txt"
    rm -rf "$dir/saves"
}
for spec in "$@"; do
    run_one "${spec%%=*}" "${spec#*=}" &
done
wait
