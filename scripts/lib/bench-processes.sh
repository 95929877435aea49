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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A base port whose next three ports, and those 1000 above, are free.
free_base() {
    python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 50000)
    try:
        socks = []
        for port in [base + i for i in range(3)] + [base + 1000 + i for i in range(3)]:
            s = socket.socket(); s.bind(("127.0.0.1", port)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
EOF
}
