#!/usr/bin/env bash
# One unattended GPU check (about 8 minutes on one H100/H200, compile warm-ups included; must stay
# under 10): SSD300 VOC training throughput of the library's step, eager and compiled, with and without
# the CPU augmentation pipeline, the loss's share of a step, peak memory, and 200-iteration runs
# (eager and compiled) whose loss must fall. Needs torch + torchvision, numpy, opencv-python-headless,
# pyyaml; no network, no Ray/MLflow/pydantic (the project is used from this checkout via PYTHONPATH).
#
#   bash bench/gpu_check.sh                 # defaults: batch 128, resident batches 128 and 256
#   GPU_CHECK_COMPILE=0 bash bench/gpu_check.sh     # eager only (no Triton on the machine)
#   bash bench/gpu_check.sh --batch 256     # extra arguments go to bench/gpu_check.py
#
# Writes gpu_check.log and gpu_check.json to $OUT when OUT is set,
# else to the current directory. Exit status: that of the main check (1 = the loss did not fall).
set -uo pipefail

cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
DEST="${OUT:-.}"
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"

{
  echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  nvidia-smi || echo "nvidia-smi not available"
  echo "cores available: $(nproc); /dev/shm: $(df -h /dev/shm 2>/dev/null | awk 'NR==2 {print $2 " total, " $4 " free"}')"
  "$PY" -c 'import sys, torch, torchvision, numpy, cv2
print("python", sys.version.split()[0], "| torch", torch.__version__, "CUDA", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "| torchvision", torchvision.__version__,
      "| numpy", numpy.__version__, "| cv2", cv2.__version__)
print("cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")'
  echo "== main check (eager and torch.compile, the library's training step)"
  # torch.compile needs Triton (and a C compiler for its launcher); GPU_CHECK_COMPILE=0 measures eager only.
  compile=both; [ "${GPU_CHECK_COMPILE:-1}" = "1" ] || compile=off
  timeout 540 "$PY" bench/gpu_check.py --compile "$compile" --json "$DEST/gpu_check.json" "$@"
  status=$?
  echo "== main check exit status $status"
  exit "$status"
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
