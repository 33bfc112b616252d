# The shop's everyday commands. `just --list` shows them with their descriptions.
#
# Everything a run creates (logs, SQLite files, token keys, pid files, the admin password) goes
# under .run/, which git ignores; `just down` stops only what `just up` started.

set shell := ["bash", "-euo", "pipefail", "-c"]

run_dir := ".run"
# Where cargo puts binaries (CARGO_TARGET_DIR is honoured, as cargo does).
target_dir := env_var_or_default("CARGO_TARGET_DIR", "target")
bin_dir := target_dir / "debug"
release_dir := target_dir / "release"
# The gateway's listener in gateway.toml, which `just up` waits for and the order service's
# payment provider reports to.
gateway_url := "http://127.0.0.1:8080"

# List the recipes.
default:
    @just --list

# Build every crate and binary.
build:
    cargo build --workspace --locked

# Run every test: unit, integration (real binaries, real SQLite files, a real Consul) and tidy checks.
test:
    #!/usr/bin/env bash
    set -euo pipefail
    # The discovery tests start their own Consul dev agents; a missing Consul fails them, so
    # install it first (instant when present) and tell the tests where it is.
    SHOP_CONSUL_BIN="$(services/lib/discovery/scripts/get-consul)"
    export SHOP_CONSUL_BIN
    # The gateway's OpenAPI test checks its document with openapi-spec-validator (from PyPI, into
    # .tools/openapi-venv/): the same, for the validator.
    SHOP_OPENAPI_VALIDATOR="$(gateway/scripts/get-openapi-validator)"
    export SHOP_OPENAPI_VALIDATOR
    # The reflection test checks the services with grpcio, a gRPC client other than tonic's
    # (from PyPI, into .tools/grpc-venv/): the same, for its Python.
    SHOP_GRPC_PYTHON="$(services/lib/kit/scripts/get-grpcio)"
    export SHOP_GRPC_PYTHON
    cargo test --workspace --locked
    just stack-test

# The stack as a newcomer runs it: `just up product=2 order=2` on the real ports, the REST walkthrough and the seed's curls through :8080, `just down`, nothing left running or listening.
stack-test:
    #!/usr/bin/env bash
    set -euo pipefail
    ports=(8080 8500 5001 5002 5003)
    listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    for port in "${ports[@]}"; do
        if listening "$port"; then
            why="127.0.0.1:$port is in use (a running stack? \`just down\` first)"
            # CI sets SHOP_STACK_TEST=require: there a busy port is a failure, not a skip.
            if [ "${SHOP_STACK_TEST:-}" = require ]; then echo "stack test: $why" >&2; exit 1; fi
            echo "stack test SKIPPED: $why"
            exit 0
        fi
    done
    trap 'just down > /dev/null 2>&1 || true' EXIT
    just up product=2 order=2
    pids="$(cat {{run_dir}}/pids/*.pid)"
    # Both product instances and both order instances serve through the gateway.
    health="$(curl -s http://127.0.0.1:8080/health)"
    for want in '"products":{"instances":2}' '"orders":{"instances":2}'; do
        grep -qF "$want" <<< "$health" \
            || { echo "the gateway does not see $want: $health" >&2; exit 1; }
    done
    cargo run -q --locked -p shop-examples --bin rest-walkthrough
    bash examples/seed-curls.sh http://127.0.0.1:8080
    just down
    trap - EXIT
    left=""
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && left="$left pid $pid"; done
    for port in "${ports[@]}"; do listening "$port" && left="$left :$port"; done
    if [ -n "$left" ]; then echo "stack test: still running after just down:$left" >&2; exit 1; fi
    echo "stack test: up, walked, curled, down; nothing left running or listening"

# Validate docker-compose.yml without a Docker engine (Compose from PyPI into .tools/, plus examples/compose/check.py).
compose-check:
    bash examples/compose/check.sh

# docker-compose.yml for real, with podman (installed when missing): local base images, every image from the host's debug binaries, the stack up on 127.0.0.1 (:8080, :8500), every health check, the seed's curls, the REST walkthrough, both product replicas, a restart, then down with everything it made removed. Skips with a message where podman cannot run.
compose-test:
    bash examples/compose/test.sh

# Checks `just up`'s arguments before it starts anything.
[private]
_scale *args:
    #!/usr/bin/env bash
    set -euo pipefail
    for arg in {{args}}; do
        case "$arg" in
            user=[1-9]|product=[1-9]|order=[1-9]) ;;
            *) echo "just up: unknown argument '$arg' (expected user=N, product=N or order=N, N from 1 to 9)" >&2; exit 1 ;;
        esac
    done

# Format the code.
fmt:
    cargo fmt --all

# Check formatting and lints (as CI does).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Build, then start the stack in the background: Consul :8500, user :5001, order :5002, product :5003, gateway :8080. `just up product=3` runs three product instances (also user=N, order=N).
up *scale: (_scale scale) build consul
    #!/usr/bin/env bash
    set -euo pipefail
    # Instances per service (checked by _scale before anything starts): the first on its fixed
    # port, the others on free ports; Consul tells the gateway and the order service of them all.
    declare -A instances=([user-service]=1 [product-service]=1 [order-service]=1)
    for arg in {{scale}}; do instances[${arg%%=*}-service]="${arg#*=}"; done
    mkdir -p {{run_dir}}/logs {{run_dir}}/data {{run_dir}}/pids
    chmod 700 {{run_dir}}
    admin_user="${SHOP_ADMIN_USER:-admin}"
    if [ -n "${SHOP_ADMIN_PASSWORD:-}" ]; then
        admin_password="$SHOP_ADMIN_PASSWORD"
    else
        # Generated once, then reused, so `just up` twice prints the same login.
        if [ ! -s {{run_dir}}/admin-password ]; then
            (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > {{run_dir}}/admin-password)
        fi
        admin_password="$(cat {{run_dir}}/admin-password)"
    fi
    # start NAME [SHOP_X=value]... BINARY ARGS...: starts one instance in the background with
    # those settings in its environment only (not on a command line, where ps would show them),
    # and waits for its ready line.
    start() {
        local name="$1"; shift
        local -a settings=()
        while [[ "${1:-}" == SHOP_*=* ]]; do settings+=("$1"); shift; done
        local pidfile="{{run_dir}}/pids/$name.pid" log="{{run_dir}}/logs/$name.log"
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "$name is already running (pid $(cat "$pidfile"))"
            return
        fi
        local offset=0
        [ -f "$log" ] && offset=$(wc -c < "$log")
        (
            export SHOP_ADMIN_USER="$admin_user" SHOP_ADMIN_PASSWORD="$admin_password"
            for setting in "${settings[@]}"; do export "$setting"; done
            exec nohup "$@"
        ) >> "$log" 2>&1 &
        echo $! > "$pidfile"
        for _ in $(seq 1 600); do
            if tail -c +"$((offset + 1))" "$log" | grep -q " ready on "; then
                echo "$name is up: $(tail -c +"$((offset + 1))" "$log" | grep " ready on " | tail -1)"
                return
            fi
            if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
                echo "$name failed to start; the end of $log:" >&2
                tail -n 20 "$log" >&2
                rm -f "$pidfile"
                exit 1
            fi
            sleep 0.1
        done
        echo "$name did not become ready within 60 s; see $log" >&2
        exit 1
    }
    # healthy NAME [N]: waits until Consul has at least N passing instances of NAME.
    healthy() {
        local want="${2:-1}" have=0
        for _ in $(seq 1 150); do
            have="$(curl -s --max-time 2 "http://127.0.0.1:8500/v1/health/service/$1?passing" | { grep -Eo '"Service": *[{]' || true; } | wc -l)"
            if [ "$have" -ge "$want" ]; then
                echo "$1 is healthy in Consul ($have instance$([ "$have" = 1 ] || echo s))"
                return
            fi
            sleep 0.1
        done
        echo "$1: $have of $want instances healthy in Consul after 15 s; see {{run_dir}}/logs/$1*.log" >&2
        exit 1
    }
    # more NAME [SHOP_X=value]... BINARY ARGS...: the extra instances of NAME asked for, on free
    # ports.
    more() {
        local name="$1"; shift
        for i in $(seq 2 "${instances[$name]}"); do
            start "$name-$i" "$@" --port 0
        done
    }
    # The user service first: it creates the token key pair the others verify with.
    start user-service {{bin_dir}}/user-service --data-dir {{run_dir}}/data
    more user-service {{bin_dir}}/user-service --data-dir {{run_dir}}/data
    healthy user-service "${instances[user-service]}"
    {{bin_dir}}/product-service seed --data-dir {{run_dir}}/data 2>> {{run_dir}}/logs/product-service.log
    start product-service {{bin_dir}}/product-service --data-dir {{run_dir}}/data
    more product-service {{bin_dir}}/product-service --data-dir {{run_dir}}/data
    healthy product-service "${instances[product-service]}"
    # The order service's own identity for inventory calls, signed by the user service.
    {{bin_dir}}/user-service issue-service-token --service order-service --data-dir {{run_dir}}/data \
        --out {{run_dir}}/data/keys/order-service.token 2>> {{run_dir}}/logs/user-service.log
    # The secret the payment provider signs its reports with, shared by every order instance:
    # SHOP_PAYMENTS_WEBHOOK_SECRET when set, else generated once (64 hex digits) and reused.
    if [ -n "${SHOP_PAYMENTS_WEBHOOK_SECRET:-}" ]; then
        webhook_secret="$SHOP_PAYMENTS_WEBHOOK_SECRET"
        webhook_secret_from="the environment (SHOP_PAYMENTS_WEBHOOK_SECRET)"
    else
        webhook_secret_from="{{run_dir}}/data/keys/webhook-secret"
        if [ ! -s "$webhook_secret_from" ]; then
            (umask 077; mkdir -p "$(dirname "$webhook_secret_from")"
             od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$webhook_secret_from")
        fi
        webhook_secret="$(cat "$webhook_secret_from")"
    fi
    # The provider reports to the gateway started below (its listener in gateway.toml), unless
    # SHOP_PAYMENTS_WEBHOOK_URL says otherwise; SHOP_ORDERS_PAY_WITHIN passes through when set.
    webhook_url="${SHOP_PAYMENTS_WEBHOOK_URL:-{{gateway_url}}/api/payments/webhook}"
    # The simulated provider pays every order it is asked to: right for this demo stack, never
    # for a shop taking money (docs/order-service.md).
    order_settings=("SHOP_PAYMENTS_WEBHOOK_SECRET=$webhook_secret" "SHOP_PAYMENTS_WEBHOOK_URL=$webhook_url"
        "SHOP_PAYMENTS_PROVIDER=${SHOP_PAYMENTS_PROVIDER:-simulated}")
    if [ -n "${SHOP_ORDERS_PAY_WITHIN:-}" ]; then
        order_settings+=("SHOP_ORDERS_PAY_WITHIN=$SHOP_ORDERS_PAY_WITHIN")
    fi
    # Several order instances share one database; a Consul session lock elects the one that
    # runs recovery (docs/order-service.md).
    start order-service "${order_settings[@]}" {{bin_dir}}/order-service --data-dir {{run_dir}}/data
    more order-service "${order_settings[@]}" {{bin_dir}}/order-service --data-dir {{run_dir}}/data
    healthy order-service "${instances[order-service]}"
    # The gateway last: it reads the user service's public key and finds the services in Consul.
    start gateway {{bin_dir}}/gateway --config gateway.toml
    for _ in $(seq 1 100); do
        curl -s -o /dev/null --max-time 2 -w '%{http_code}' {{gateway_url}}/health | grep -q 200 && break
        sleep 0.1
    done
    echo
    echo "gateway (REST):         {{gateway_url}}   (try: curl http://localhost:8080/api/products/1)"
    echo "consul:                 http://127.0.0.1:8500/ui"
    echo "user service (gRPC):    http://127.0.0.1:5001"
    echo "order service (gRPC):   http://127.0.0.1:5002"
    echo "product service (gRPC): http://127.0.0.1:5003"
    echo "admin login:            $admin_user / $admin_password"
    echo "payments:               provider ${SHOP_PAYMENTS_PROVIDER:-simulated}, reporting to $webhook_url (secret from $webhook_secret_from)"
    echo "logs:                   {{run_dir}}/logs/   (just logs)"
    echo "try it:                 just demo"
    echo "stop:                   just down"

# Back up the three services' databases while they run (SQLite's online backup, consistent) into .run/backups/<UTC time>/; restoring: docs/deployment.md.
backup data_dir=(run_dir / "data"):
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q --locked -p user-service -p product-service -p order-service
    mkdir -p {{run_dir}}/backups
    chmod 700 {{run_dir}}/backups
    stamp() { date -u +%Y-%m-%dT%H-%M-%SZ; }
    dir="{{run_dir}}/backups/$(stamp)"
    # Two backups in one second: the second waits for a fresh name rather than mix two sets.
    while [ -e "$dir" ]; do sleep 1; dir="{{run_dir}}/backups/$(stamp)"; done
    mkdir "$dir"
    for service in user product order; do
        {{bin_dir}}/$service-service backup --data-dir "{{data_dir}}" --to "$dir/$service.db" --log warn
    done
    echo "backups of {{data_dir}} in $dir"

# Install Consul if it is missing (into .tools/consul/, from Debian's package) and say where it is.
consul-install:
    #!/usr/bin/env bash
    set -euo pipefail
    consul_bin="$(services/lib/discovery/scripts/get-consul)"
    echo "consul: $consul_bin ($("$consul_bin" version | head -1))"

# Start a Consul dev agent on 127.0.0.1:8500 in the background (in-memory; `just down` stops it).
consul:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{run_dir}}/logs {{run_dir}}/pids
    pidfile="{{run_dir}}/pids/consul.pid" log="{{run_dir}}/logs/consul.log"
    url="http://127.0.0.1:8500/v1/status/leader"
    started=""
    if curl -s -o /dev/null --max-time 2 "$url"; then
        echo "consul: something already answers on 127.0.0.1:8500; reusing it"
    elif [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "consul is already starting (pid $(cat "$pidfile"))"
    else
        consul_bin="$(services/lib/discovery/scripts/get-consul)"
        # -dev: a single server with in-memory data, so every start begins empty.
        nohup "$consul_bin" agent -dev -node=shop-dev -bind=127.0.0.1 -client=127.0.0.1 \
            -http-port=8500 -dns-port=-1 -grpc-port=-1 -log-level=info >> "$log" 2>&1 &
        echo $! > "$pidfile"
        started=1
    fi
    # Ready once a leader is elected: /v1/status/leader answers "127.0.0.1:8300", not "" or a 500.
    deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        leader="$(curl -s --max-time 2 "$url" 2>/dev/null || true)"
        if [[ "$leader" == \"?*\" ]]; then
            echo "consul is up: http://127.0.0.1:8500 (leader $leader; log {{run_dir}}/logs/consul.log)"
            exit 0
        fi
        if [ -n "$started" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "consul failed to start; the end of $log:" >&2
            tail -n 20 "$log" >&2
            rm -f "$pidfile"
            exit 1
        fi
        sleep 0.1
    done
    echo "consul on 127.0.0.1:8500 has no leader after 30 s; see $log" >&2
    exit 1

# Stop what `just up` started (and nothing else).
down:
    #!/usr/bin/env bash
    set -euo pipefail
    shopt -s nullglob
    # Services first (they deregister from Consul on the way out), Consul last.
    pidfiles=()
    for f in {{run_dir}}/pids/*.pid; do [ "$(basename "$f")" = consul.pid ] || pidfiles+=("$f"); done
    [ -f {{run_dir}}/pids/consul.pid ] && pidfiles+=({{run_dir}}/pids/consul.pid)
    for pidfile in "${pidfiles[@]}"; do
        name="$(basename "$pidfile" .pid)"
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                echo "$name (pid $pid) did not stop within 15 s; killing it"
                kill -KILL "$pid" || true
            fi
            echo "stopped $name (pid $pid)"
        fi
        rm -f "$pidfile"
    done

# Show what `just up` started, whether it still runs, and what Consul sees.
status:
    #!/usr/bin/env bash
    shopt -s nullglob
    found=0
    for pidfile in {{run_dir}}/pids/*.pid; do
        found=1
        name="$(basename "$pidfile" .pid)"; pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then echo "$name: running (pid $pid)"; else echo "$name: not running (stale pid $pid)"; fi
    done
    [ "$found" = 1 ] || echo "nothing started by just up"
    if curl -s -o /dev/null --max-time 2 http://127.0.0.1:8500/v1/status/leader; then
        echo
        echo "Consul (127.0.0.1:8500) sees these healthy instances:"
        for svc in user-service product-service order-service; do
            ids="$(curl -s --max-time 2 "http://127.0.0.1:8500/v1/health/service/$svc?passing" \
                | { grep -Eo "\"ID\": *\"$svc-[^\"]*\"" || true; } | sed -E "s/.*\"$svc-([^\"]*)\"/\1/" | tr '\n' ' ')"
            echo "  $svc: ${ids:-none}"
        done
    else
        echo "Consul does not answer on 127.0.0.1:8500"
    fi

# Follow the logs of everything `just up` started.
logs:
    tail -n 50 -F {{run_dir}}/logs/*.log

# Walk the user and product APIs against the running stack.
demo:
    cargo run -q -p shop-examples --bin user-walkthrough
    @echo
    cargo run -q -p shop-examples --bin product-walkthrough
    @echo
    cargo run -q -p shop-examples --bin order-walkthrough
    @echo
    cargo run -q -p shop-examples --bin discover-products

# Benchmarks (release; own processes and data; docs/benchmarks.md): plain hyper, nginx in front of it, the gateway, each service over gRPC and order creation in one run, with CPU per request per process and a chart (docs/bench.svg); then login timing. `just bench 10 gateway` runs only rows whose name contains "gateway".
bench seconds="10" rows="":
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for tool in wrk h2load nginx; do command -v "$tool" > /dev/null || missing+=("$tool"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "bench needs ${missing[*]}: sudo apt-get install wrk nghttp2-client nginx-light" >&2
        exit 1
    fi
    cargo build --release --locked -p user-service -p product-service -p order-service -p shop-gateway -p shop-examples
    rows=()
    [ -n "{{rows}}" ] && rows=(--rows "{{rows}}")
    {{release_dir}}/bench --bin-dir {{release_dir}} --seconds {{seconds}} --chart docs/bench.svg "${rows[@]}"
    echo
    dir="$(mktemp -d)"
    trap 'kill -TERM "$user_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
    {{release_dir}}/user-service --port 0 --data-dir "$dir/data" --consul "" > "$dir/user.out" 2> "$dir/user.err" &
    user_pid=$!
    for _ in $(seq 1 300); do grep -q " ready on " "$dir/user.out" && break; sleep 0.1; done
    user="$(grep " ready on " "$dir/user.out" | awk '{print $NF}')"
    {{release_dir}}/login-timing "http://$user" 200

# The catalogue at shop size (release; scratch folders; docs/benchmarks.md): seeds 100,000 and 1,000,000 generated products, then runs every list and search shape through the gateway with 8 clients, printing p50/p99 per shape, seed time and database size. `just bench-catalogue 5 100000` measures one size.
bench-catalogue seconds="5" sizes="100000,1000000":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v wrk > /dev/null || { echo "bench-catalogue needs wrk: sudo apt-get install wrk" >&2; exit 1; }
    cargo build --release --locked -p user-service -p product-service -p shop-gateway -p shop-examples
    {{release_dir}}/bench --bin-dir {{release_dir}} --seconds {{seconds}} --catalogue {{sizes}}
