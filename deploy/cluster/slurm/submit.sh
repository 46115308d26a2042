#!/usr/bin/env bash
# Grade (or rank) a class on a Slurm cluster: N shards as one array job, then the merge once all have succeeded.
#
#   deploy/cluster/slurm/submit.sh grade       SUBMISSIONS OUT N [options of `python -m grader grade`]
#   deploy/cluster/slurm/submit.sh leaderboard SUBMISSIONS OUT N [options of `python -m grader leaderboard`]
#
# SUBMISSIONS and OUT must be on a filesystem every node sees; GRADER_REPO (default: this checkout) too.
# A shard that failed or was killed: `sbatch --array=K ... shard.sbatch` again (merge names the missing ones).
# See docs/SCALE.md.
set -euo pipefail
if [ $# -lt 4 ] || { [ "$1" != grade ] && [ "$1" != leaderboard ]; }; then
    echo "usage: $0 grade|leaderboard SUBMISSIONS OUT N [options]" >&2
    exit 2
fi
KIND=$1 SUBMISSIONS=$(realpath "$2") OUT=$(realpath -m "$3") N=$4
shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
export GRADER_REPO=${GRADER_REPO:-$(cd "$HERE/../../.." && pwd)}
mkdir -p "$OUT"
ARRAY=$(sbatch --parsable --array=0-$((N-1)) --chdir="$OUT" \
    --export=ALL,KIND="$KIND",SUBMISSIONS="$SUBMISSIONS",OUT="$OUT",N="$N" "$HERE/shard.sbatch" "$@")
ARRAY=${ARRAY%%;*}
MERGE=$(sbatch --parsable --dependency=afterok:"$ARRAY" --chdir="$OUT" --export=ALL,OUT="$OUT" "$HERE/merge.sbatch")
echo "shards: job $ARRAY (array 0-$((N-1))); merge: job ${MERGE%%;*}, after all shards succeed"
