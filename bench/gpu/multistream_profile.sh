#!/usr/bin/env bash
# One device call for issue #13's profile (bench/README.md): 8 NVDEC streams, decode / Python passthrough / group /
# group at 2N, with and without gc.freeze, py-spy --gil over 2 s of each pyinfer variant's timed window.
# Needs: source .gpu-bundle/setup.sh; the .whl wheels on PYTHONPATH (py-spy in /tmp/site/bin); $OUT.
set -u
V=${VIDEO:-.gpu-data/scene/video.mp4}
S=${STREAMS:-8}
SPY=/tmp/site/bin/py-spy
python3 bench/gpu/multistream.py --video "$V" --streams "$S" --variants ${VARIANTS:-decode,pyid,group,groupb2} \
  --budget-s 200 --out "$OUT" --tag=-gc 2>&1 | grep -E "frames/s|ERROR|Error|error" | cut -c1-200
python3 bench/gpu/multistream.py --video "$V" --streams "$S" --variants ${VARIANTS_SPY:-pyid,group,groupb2} --gc-freeze \
  --pyspy "$SPY" --pyspy-s 2 --budget-s 200 --out "$OUT" --tag=-freeze 2>&1 | grep -E "frames/s|ERROR|Error|error" | cut -c1-200
for f in "$OUT"/pyspy-*.txt; do
  echo "#### $f"
  python3 bench/pyspy_top.py "$f" --rate 500 --seconds 2 --top ${TOP:-8} | grep -v "Thread\.\|threading.py:10\|threading.py:99" | head -${LINES_PER:-60}
done
