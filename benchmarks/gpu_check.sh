#!/usr/bin/env bash
# The GPU check: one short script for when a GPU machine is lent (sized for about 5 minutes on one
# H100, well under the 8-minute limit; not yet run on a GPU, as none was lent to the session that wrote it).
#
#   bash benchmarks/gpu_check.sh [PYTHON]        # run from the repository root
#
# PYTHON defaults to .venv/bin/python when it exists, else python3 (it needs torch, torchvision,
# numpy, pillow, pyyaml, tqdm, matplotlib, scipy, pytest; the package is used from src/).
# Output goes to the terminal and to $OUT/gpu_check.log (OUT defaults to gpu-check-output).
#
#   1. the CUDA tests (grouping, semantic and instance metrics, inference) -- they skip on a CPU;
#   2. FCRN-101 OS 8 vs torchvision's deeplabv3_resnet101, bf16, 512 x 512, batch 8:
#      ms / step, images / s and peak memory side by side in one run;
#   3. one real bf16 training run of FCRN-101 OS 8 on 512 x 512 crops through `bridgeseg train`
#      (synthetic 512-pixel scenes; 30 steps, checkpoint, evaluation, resume of 5 more steps);
#   4. grouping time on a 1024 x 2048 image on the GPU and on the CPU, next to the FCRN-50 forward pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-gpu-check-output}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.log"
status=0
step() { echo; echo "=== $1 ($(date +%T))" | tee -a "$LOG"; }
run() { "$@" 2>&1 | tee -a "$LOG"; local rc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] || { echo "FAILED ($rc): $*" | tee -a "$LOG"; status=1; }; }

step "device"
run "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
[ "$status" -eq 0 ] || exit 1

step "1/4 CUDA tests"
run "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda tests/test_grouping.py tests/test_semantic_metrics.py \
    tests/test_instance_metrics.py tests/test_inference.py

step "2/4 FCRN-101 vs deeplabv3_resnet101, bf16, 512x512, batch 8"
(cd benchmarks && run "$PYTHON" fcrn_vs_deeplabv3.py --depth 101 --size 512 --batch 8 --amp bf16 --rounds 5 --device cuda)

step "3/4 bridgeseg train: FCRN-101 OS 8, bf16, 512x512 crops, 30 steps, then resume to 35"
run "$PYTHON" -m bridgeseg data synthetic --out "$OUT/data" --train 64 --val 8 --size 512
TRAIN=(model.arch=joint model.depth=101 model.output_stride=8 model.kernel=3 model.dilation=12 model.init=random
       data.crop_size=512 data.workers=4 train.batch_size=8 train.amp=bf16 train.device=cuda train.optimizer=sgd
       train.lr=0.001 train.iterations=30 train.time_limit_minutes=0 train.eval_every=0 train.checkpoint_every=10
       train.log_every=5)
run "$PYTHON" -m bridgeseg train demo --data-root "$OUT/data" --out "$OUT/run" --set "${TRAIN[@]}"
run "$PYTHON" -m bridgeseg train demo --data-root "$OUT/data" --out "$OUT/run" --set "${TRAIN[@]}" train.iterations=35

step "4/4 grouping on a 1024x2048 image: GPU, then CPU"
(cd benchmarks && run "$PYTHON" grouping_speed.py --size 1024 --width 2048 --classes 19 --instances 30 --device cuda)
(cd benchmarks && run "$PYTHON" grouping_speed.py --size 1024 --width 2048 --classes 19 --instances 30 --device cpu \
    --repeats 2 --no-table)

step "done: $([ "$status" -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED, see above)"
exit "$status"
