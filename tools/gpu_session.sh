#!/bin/bash
# The `gpu` profile on a lent, offline GPU machine within a deadline: installs the carried
# wheels (.whl/), then runs tools/lease.py, which makes the runs in order of value, skips
# those already in runs/gpu, and keeps every finished run in $OUT/runs_gpu.tar.gz, with
# $OUT/lease.log and $OUT/lease.json (at most 8 files come back). tools/README.md has the
# exact device call.
#
#   OUT=DIR [DATA=.data/retina] [PYTHON=python3] bash tools/gpu_session.sh SECONDS [tools.lease run options: --jobs 4 --only unet ...]
#
# Prepare the carry first: python -m tools.lease_carry prepare PATH/TO/retina (makes .data/
# and .whl/ and prints the bytes a call sends). Try it on a CPU:
#   OUT=/tmp/out DATA=data/retina bash tools/gpu_session.sh 300 --dry_run --jobs 2
export LEASE_STARTED=$(date +%s)  # the deadline counts from here: the wheels' install and Python's start are in it
set -u
deadline=${1:?give the number of seconds this session may take}
shift
: "${OUT:?set OUT to the folder whose files come back}"
WHL=${WHL:-.whl}  # the carried wheels (the rehearsal test points it elsewhere)
PYTHON=${PYTHON:-python3}  # the interpreter to run (a test gives its own: a virtualenv need not be on the PATH)
export PIP_ROOT_USER_ACTION=ignore
if ls "$WHL"/*.whl > /dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
        || { echo "error: cannot install the carried wheels in $WHL/" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m tools.lease run "$deadline" --out "$OUT" --data "${DATA:-.data/retina}" "$@"
