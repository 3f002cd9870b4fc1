#!/usr/bin/env bash
# The README's "Your own network" walkthrough, command for command: a coordinator, two
# contributors and a workspace started by hand on 127.0.0.1, the workspace funded from the
# devnet faucet, one job with redundancy 2, then the balances and a verified ledger on every
# node. Exits non-zero at the first step that fails; stops every daemon it started.
#
#   scripts/walkthrough.sh [WORK_DIR]     (default: a new temporary directory)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$here/.venv/bin:$PATH"
work=${1:-$(mktemp -d -t aimx-walkthrough-XXXXXX)}
mkdir -p "$work" && cd "$work"
echo "walkthrough in $work"

pids=()
stop() {
    for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap stop EXIT

# wait_up DIR: until the daemon in DIR answers `aimx node status` (60 s at most)
wait_up() {
    for _ in $(seq 120); do
        aimx node status --data-dir "$1" --json >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "the node in $1 did not come up; its log: $1.log" >&2
    tail -n 20 "$1.log" >&2
    return 1
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$2)" <<<"$1"; }

# 1. A coordinator: the bootstrap peer, block producer and devnet faucet.
aimx coordinator start --data-dir coord --listen /ip4/127.0.0.1/tcp/0 >coord.log 2>&1 &
pids+=($!)
wait_up coord
status=$(aimx node status --data-dir coord --json)
bootstrap=$(field "$status" '["addresses"][0]')
genesis=$(field "$status" '["genesis_hash"]')
echo "coordinator at $bootstrap, genesis $genesis"

# 2. Two contributors and a workspace join it.
for name in alice bob; do
    aimx node start --role contributor --data-dir "$name" --listen /ip4/127.0.0.1/tcp/0 \
        --bootstrap "$bootstrap" --genesis-hash "$genesis" >"$name.log" 2>&1 &
    pids+=($!)
done
aimx node start --role requester --data-dir workspace --listen /ip4/127.0.0.1/tcp/0 \
    --bootstrap "$bootstrap" --genesis-hash "$genesis" >workspace.log 2>&1 &
pids+=($!)
for name in alice bob workspace; do wait_up "$name"; done

# 3. Fund the workspace from the faucet (devnet only).
workspace=$(field "$(aimx keys show --data-dir workspace --json)" '["peer_id"]')
aimx faucet "$workspace" 10 --coordinator-dir coord

# 4. A job: the model the package ships, one input, two replicas that must agree.
model=$(python3 -c "import sandbox.models, pathlib; print(pathlib.Path(sandbox.models.__file__).with_name('tiny_mlp.onnx'))")
python3 -c "import numpy as np; np.save('x.npy', np.ones((1, 16), np.float32))"
aimx job submit "$model" --input x=x.npy --redundancy 2 --wait --data-dir workspace

# 5. What it cost and who was paid; every node's chain verifies.
for name in workspace alice bob; do
    account=$(field "$(aimx keys show --data-dir "$name" --json)" '["peer_id"]')
    echo "== $name"
    aimx ledger balance "$account" --data-dir workspace
done
for name in coord alice bob workspace; do
    aimx ledger verify --data-dir "$name"
done
echo "walkthrough done"
