# Shared by the benchmark scripts: a scratch directory and the servers started in it,
# both removed on exit, and a free port on 127.0.0.1. Usage: source it, then append
# each server's pid to `pids`.
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Nodes started by hand prove to each other that they hold one cluster secret.
KV_CLUSTER_SECRET="$(head -c 32 /dev/urandom | base64)"
export KV_CLUSTER_SECRET

# Waits up to 30 s for URL to answer with a success; fails, saying so, if it does not.
# Usage: wait_for_url URL
wait_for_url() {
    for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "no answer from $1" >&2
    return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A base port whose next three ports (FREE_BASE_WIDTH of them, for more nodes), and those
# at each offset above it (by default 1000: the peer ports), are free.
# Usage: free_base [OFFSET...]
free_base() {
    python3 - "${@:-1000}" <<'EOF'
import os, random, socket, sys
offsets = [0] + [int(offset) for offset in sys.argv[1:]]
width = int(os.environ.get("FREE_BASE_WIDTH", "3"))
for _ in range(200):
    base = random.randrange(20000, 50000)
    socks = []
    try:
        for port in [base + offset + i for offset in offsets for i in range(width)]:
            s = socket.socket(); s.bind(("127.0.0.1", port)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
EOF
}
