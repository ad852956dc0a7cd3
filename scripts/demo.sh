#!/usr/bin/env bash
# Install mgpu (.venv in the checkout) and run the main job on a local cluster: a master and a
# node on this machine (real GPUs when present, 2 fake ones otherwise), two 1-GPU jobs side by
# side with different CUDA_VISIBLE_DEVICES, a third one waiting its turn and then running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
state="$root/.mgpu-demo"
port="${MGPU_DEMO_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
# Clients talk to the master over its Unix socket: the kernel vouches for the user.
export MGPU_MASTER="unix:$state/master/master.sock"
work="$state/jobs"
rm -rf "$state"  # every demo starts from an empty cluster
mkdir -p "$work"
cleanup() { mgpu_client local stop --state-dir "$state" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "\$ mgpu_client local start"
mgpu_client local start --port "$port" --state-dir "$state"
echo
echo "\$ mgpu_client nodes"
mgpu_client nodes
gpus=$(mgpu_client nodes --json | python -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"][0]["gpus"]))')
job='echo "job $MGPU_JOB_ID on $MGPU_NODE: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"; sleep 3; echo "job $MGPU_JOB_ID done"'
echo
echo "# $gpus GPU(s): submit $gpus+1 one-GPU jobs; the last one waits for a free GPU"
ids=()
for _ in $(seq 0 "$gpus"); do
    ids+=("$(cd "$work" && mgpu_sbatch --parsable --gpus 1 -J demo --wrap "$job")")
    echo "Submitted batch job ${ids[-1]}"
done
echo
echo "\$ mgpu_queue"
mgpu_queue
last="${ids[-1]}"
echo
echo "# waiting for job $last (it starts when a GPU frees) ..."
echo "\$ mgpu_srun --gpus 1 -- echo ...   (an interactive job queues behind it)"
mgpu_srun --gpus 1 -- sh -c 'echo "srun job $MGPU_JOB_ID: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"'
deadline=$((SECONDS + 120))
while [ -n "$(mgpu_queue --noheader -t PD,R -j "$last")" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "demo: job $last did not finish in 120 s" >&2; exit 1; }
    sleep 0.2
done
echo
echo "\$ mgpu_queue -t all"
mgpu_queue -t all
echo
for id in "${ids[@]}"; do echo "\$ cat mgpu-$id.out"; cat "$work/mgpu-$id.out"; done
echo
echo "demo done: the local cluster is stopped on exit (logs in $state)"
