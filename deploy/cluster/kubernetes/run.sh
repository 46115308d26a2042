#!/usr/bin/env bash
# Run the Indexed Job with N shards, wait for it, then the merge Job.
#   deploy/cluster/kubernetes/run.sh N [IMAGE]
# The claim grader-class must hold submissions/ (and is where graded/ is written). See docs/SCALE.md.
set -euo pipefail
N=${1:?usage: $0 N [IMAGE]} IMAGE=${2:-grader:latest}
HERE=$(cd "$(dirname "$0")" && pwd)
sed -e "s|completions: 8|completions: $N|; s|parallelism: 8|parallelism: $N|" \
    -e "s|/8\\\\\"|/$N\\\\\"|; s|image: grader:latest|image: $IMAGE|" "$HERE/shards.yaml" | kubectl apply -f -
kubectl wait --for=condition=complete job/grader-shards --timeout=24h
sed -e "s|image: grader:latest|image: $IMAGE|" "$HERE/merge.yaml" | kubectl apply -f -
kubectl wait --for=condition=complete job/grader-merge --timeout=1h
kubectl logs job/grader-merge
