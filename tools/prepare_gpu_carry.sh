#!/bin/bash
# Prepare what tools/gpu_session.sh carries to a lent GPU machine (Python 3.12, offline), and
# print the exact bytes a device call would send (tracked files, untracked files git does not
# ignore, .data and .whl); exit 2 above 56 MiB. .data/retina is a lossless compact copy of the
# retina folder (mirror-image copies remade and checked there), .whl/ the wheels that machine lacks.
#   bash tools/prepare_gpu_carry.sh PATH/TO/retina     # then carry [".data", ".whl"]
#   bash tools/prepare_gpu_carry.sh                    # only measure
set -eu
if [ $# -ge 1 ]; then
    exec python3 -m tools.lease_carry prepare "$1"
fi
exec python3 -m tools.lease_carry size
