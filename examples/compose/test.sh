#!/usr/bin/env bash
# Runs docker-compose.yml for real, with podman and podman-compose, and takes it all away again:
#
#   1. podman, runc, mmdebstrap (apt-get) and podman-compose (PyPI) when missing (get-podman);
#   2. the local base images, since no registry may be reachable (local-images);
#   3. the workspace's debug binaries (cargo build: nothing to do after `just test`), copied to
#      target/container-bin/ for the Dockerfile's BINARIES=host, so no Rust builds in a container;
#   4. every image of the compose file (podman-compose build);
#   5. the services started in the order their depends_on says, each waited for as Compose
#      would: healthy (its health check), or finished with exit 0 (the one-shots);
#   6. through 127.0.0.1:8080: both product replicas counted by the gateway and answering
#      requests, the seed's curls, the REST walkthrough (a payment through the simulated
#      provider and the webhook included);
#   7. product-1 restarted (podman restart) and product-2 crashed (kill -9; its restart policy
#      brings it back), each followed by the same checks, then the seed's curls once more;
#   8. down: containers, pod, network, volumes, and every image this run built or imported.
#
# podman without systemd (CI, containers) runs no health check by itself, and podman-compose
# ignores `condition: service_healthy` on podman older than 4.6: this script runs the health
# checks (`podman healthcheck run`) and keeps the start order.
#
#   bash examples/compose/test.sh     # or: just compose-test
#
# Where podman cannot run, it says so and skips (exit 0); with SHOP_COMPOSE_TEST=require (CI)
# that is a failure. Published ports 8080 and 8500 must be free; it refuses to start otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."

project=shop-compose-test
logs=.run/compose-test
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
stage=target/container-bin
begin=$SECONDS
say() { printf '[compose-test %3ds] %s\n' "$((SECONDS - begin))" "$*"; }
cannot() {
    if [ "${SHOP_COMPOSE_TEST:-}" = require ]; then echo "compose test: $*" >&2; exit 1; fi
    echo "compose test SKIPPED: $*"
    exit 0
}
# podman without systemd says on every start and stop of a container with a health check that
# it cannot set up the check's timer; this script runs the checks itself, so those lines go.
quiet() { grep -v -e 'unable to get systemd connection' -e 'failed to connect to syslog' || true; }

# --- 1. tools -------------------------------------------------------------------------------
podman_compose="$(examples/compose/get-podman)" || cannot "podman is not available here (the reason is above)"
python="$(dirname "$podman_compose")/python"
if [ -z "${CONTAINERS_CONF:-}" ]; then
    # Settings podman needs on a machine without systemd, such as CI's: cgroups managed by
    # podman itself, runc (crun fails here on cgroups and rlimits), no rlimits copied into
    # containers, events in a file instead of the journal.
    mkdir -p .tools/podman
    cat > .tools/podman/containers.conf <<'EOF'
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
EOF
    export CONTAINERS_CONF="$PWD/.tools/podman/containers.conf"
fi
podman info >/dev/null 2>&1 || cannot "podman is installed but does not work here: $(podman info 2>&1 | tail -1)"
say "podman $(podman version --format '{{.Client.Version}}'), $("$podman_compose" --version 2>/dev/null | head -1), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), CONTAINERS_CONF=$CONTAINERS_CONF"

mine() { podman ps -a -q --filter "label=io.podman.compose.project=$project"; }
images_before="$(podman images -a -q --no-trunc | sort -u)"

# Compose's variables: local images, host binaries, a fresh admin password and webhook secret.
export SHOP_BINARIES=host
export SHOP_ADMIN_USER=admin
SHOP_ADMIN_PASSWORD="compose-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
SHOP_PAYMENTS_WEBHOOK_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export SHOP_ADMIN_PASSWORD SHOP_PAYMENTS_WEBHOOK_SECRET
unset SHOP_PAYMENTS_PROVIDER SHOP_ORDERS_PAY_WITHIN   # the file's defaults: simulated, 30m
pc() { "$podman_compose" -p "$project" "$@"; }

teardown() {
    local status=$?
    trap - EXIT
    set +e
    if [ "$status" != 0 ] && [ -n "$(mine)" ]; then
        echo
        echo "compose test FAILED; the last lines of each container's log:"
        for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
            echo "--- $c ($(podman inspect -f '{{.State.Status}} exit {{.State.ExitCode}}' "$c"))"
            podman logs --tail 15 "$c" 2>&1 | quiet
        done
    fi
    # Every container's log stays in $logs/ for a look afterwards.
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}'); do
        podman logs "$c" > "$logs/container-$c.log" 2>&1
    done
    if [ -n "$(mine)" ] || podman network exists "${project}_shop"; then
        echo
        say "down: podman-compose down -v (containers, pod, network, volumes)"
        pc down -v -t 10 2>&1 < /dev/null | quiet | grep -v -e '^[0-9a-f]\{64\}$' -e '^Error: no \(container\|pod\) with name' \
            | sort -u | sed 's/^/    removed: /'
    fi
    # Every image this run made: the compose file's, the local bases, the build's layers.
    local made
    made="$(comm -13 <(echo "$images_before") <(podman images -a -q --no-trunc | sort -u))"
    if [ -n "$made" ]; then
        say "down: removing the $(wc -l <<< "$made") images this run built or imported:"
        podman images -a --format '{{.ID}} {{.Repository}}:{{.Tag}}' | grep -F -f <(sed 's/^sha256://' <<< "$made" | cut -c1-12) \
            | sed 's/<none>:<none>/(a build layer)/' | sort -k2 | sed 's/^/    /'
        podman rmi -f $made >/dev/null 2>&1 || true
        # Layers that were parents of the images above are free only now.
        made="$(comm -13 <(echo "$images_before") <(podman images -a -q --no-trunc | sort -u))"
        [ -z "$made" ] || podman rmi -f $made >/dev/null 2>&1 || true
    fi
    rm -rf "$stage"
    local left=""
    [ -z "$(mine)" ] || left="$left containers"
    podman pod exists "pod_$project" && left="$left pod"
    podman network exists "${project}_shop" && left="$left network"
    podman volume ls --format '{{.Name}}' | grep -q "^${project}_" && left="$left volumes"
    [ -z "$(comm -13 <(echo "$images_before") <(podman images -a -q --no-trunc | sort -u))" ] || left="$left images"
    if [ -n "$left" ]; then
        echo "compose test: still there after teardown:$left" >&2
        status=1
    else
        say "down: no container, pod, network, volume or image of $project left"
    fi
    if [ "$status" = 0 ] && [ -n "$completed" ]; then
        say "compose test: built, up, healthy, walked, curled, restarted, down (total $((SECONDS - begin)) s)"
    fi
    exit "$status"
}

if [ -n "$(mine)" ]; then
    say "a previous run's containers are still there; taking them down first"
    pc down -v -t 10 2>&1 | quiet >/dev/null
fi
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 8500; do
    if listening "$port"; then
        echo "compose test: 127.0.0.1:$port is in use, and the stack publishes it (a running \`just up\`? \`just down\` first)" >&2
        exit 1
    fi
done
completed=""
trap teardown EXIT
rm -rf "$logs" && mkdir -p "$logs"

# --- 2. base images ---------------------------------------------------------------------------
say "local base images (examples/compose/local-images)"
images="$(examples/compose/local-images)"
while IFS='=' read -r name value; do export "$name=$value"; echo "    $name=$value"; done <<< "$images"
# The probe that containers run here at all, and the C library the host binaries will meet.
image_glibc="$(podman run --rm "$SHOP_RUNTIME_IMAGE" ldd --version 2>&1 | quiet | sed -n '1s/.* //p')" \
    || cannot "podman cannot run a container here: $(podman run --rm "$SHOP_RUNTIME_IMAGE" true 2>&1 | quiet | tail -1)"

# --- 3. host binaries -------------------------------------------------------------------------
say "cargo build --workspace --locked (debug, as \`just test\` left it)"
cargo build -q --workspace --locked
mkdir -p "$stage"
for bin in user-service product-service order-service gateway; do cp -f "$bin_dir/$bin" "$stage/"; done
need_glibc="$(objdump -T "$stage"/* | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
if [ "$(printf '%s\n%s\n' "$need_glibc" "$image_glibc" | sort -V | tail -1)" != "$image_glibc" ]; then
    echo "compose test: the host binaries need glibc $need_glibc, $SHOP_RUNTIME_IMAGE has $image_glibc" >&2
    exit 1
fi
say "staged $(ls "$stage" | tr '\n' ' ')in $stage (need glibc $need_glibc; the image has $image_glibc)"

# --- 4. images --------------------------------------------------------------------------------
say "podman-compose build (examples/compose/Dockerfile, BINARIES=host, RUNTIME_IMAGE=$SHOP_RUNTIME_IMAGE)"
if ! pc build > "$logs/build.log" 2>&1; then
    tail -n 40 "$logs/build.log" >&2
    exit 1
fi
podman images --filter "reference=localhost/${project}_*" --format '    {{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' | sort

# --- 5. up, in depends_on order ---------------------------------------------------------------
# One line per service: name, what to wait for (healthy, exit0 or running), and for how long
# (the health check's interval times its retries).
plan="$("$python" - docker-compose.yml <<'EOF'
import re, sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
order = []
def visit(name):
    if name not in order:
        for dep in services[name].get("depends_on") or []:
            visit(dep)
        order.append(name)
for name in services:
    visit(name)
def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)] if m else 30
once = {dep for s in services.values() for dep, how in (s.get("depends_on") or {}).items()
        if isinstance(how, dict) and how.get("condition") == "service_completed_successfully"}
for name in order:
    check = services[name].get("healthcheck")
    if check:
        print(name, "healthy", int(seconds(check.get("interval", "30s")) * int(check.get("retries", 3))) + 10)
    elif name in once or "restart" not in services[name]:
        print(name, "exit0", 120)
    else:
        print(name, "running", 30)
EOF
)"
container() { podman ps -a --filter "label=io.podman.compose.project=$project" --filter "label=io.podman.compose.service=$1" --format '{{.Names}}' | head -1; }
state() { podman inspect -f '{{.State.Status}}' "$1" 2>/dev/null; }
# wait_for SERVICE WHAT SECONDS
wait_for() {
    local c started=$SECONDS
    c="$(container "$1")"
    case "$2" in
        healthy)
            while ! podman healthcheck run "$c" >/dev/null 2>&1; do
                if [ "$(state "$c")" = exited ]; then echo "$1 exited instead of becoming healthy" >&2; return 1; fi
                if [ $((SECONDS - started)) -ge "$3" ]; then echo "$1 is not healthy after $3 s" >&2; return 1; fi
                sleep 0.5
            done
            say "  $1: healthy ($c, $((SECONDS - started)) s)" ;;
        exit0)
            local code
            code="$(timeout "$3" podman wait "$c")" || { echo "$1 did not finish within $3 s" >&2; return 1; }
            [ "$code" = 0 ] || { echo "$1 exited with $code" >&2; return 1; }
            say "  $1: done, exit 0 ($c)" ;;
        running)
            [ "$(state "$c")" = running ] || { echo "$1 is not running" >&2; return 1; }
            say "  $1: running ($c)" ;;
    esac
}
say "up, in depends_on order, each waited for as Compose would"
# (fd 3: podman-compose and podman read standard input.)
while read -r name what seconds <&3; do
    pc up -d --no-deps "$name" < /dev/null > "$logs/up-$name.log" 2>&1 || { quiet < "$logs/up-$name.log" >&2; exit 1; }
    wait_for "$name" "$what" "$seconds" < /dev/null
done 3<<< "$plan"

say "every container, its health check run once more:"
while read -r name what _ <&3; do
    if [ "$what" = healthy ]; then podman healthcheck run "$(container "$name")" < /dev/null >/dev/null 2>&1 \
        || { echo "$name is no longer healthy" >&2; exit 1; }; fi
done 3<<< "$plan"
podman ps -a --filter "label=io.podman.compose.project=$project" --format '{{.Names}}|{{.Status}}|{{.Ports}}' \
    | column -t -s '|' | sed 's/^/    /'
published="$(podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Ports}}' | tr ',' '\n' | grep -- '->' || true)"
if [ -z "$published" ] || grep -v '^ *127\.0\.0\.1:' <<< "$published"; then
    echo "compose test: every published port must be on 127.0.0.1; published: $published" >&2
    exit 1
fi
say "published on 127.0.0.1 only: $(echo $published)"

# --- 6. through the gateway -------------------------------------------------------------------
gateway=http://127.0.0.1:8080
# replicas N: waits until the gateway counts N product instances (Consul's passing set), every
# upstream has one, and /ready says 200.
replicas() {
    local health="" started=$SECONDS
    while [ $((SECONDS - started)) -lt 30 ]; do
        health="$(curl -s --max-time 2 "$gateway/health" || true)"
        if grep -qF "\"products\":{\"instances\":$1}" <<< "$health" \
            && grep -qF '"users":{"instances":1}' <<< "$health" && grep -qF '"orders":{"instances":1}' <<< "$health" \
            && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$gateway/ready")" = 200 ]; then
            say "  GET /health: $health; GET /ready: 200"
            return
        fi
        sleep 0.5
    done
    echo "compose test: the gateway does not count $1 product instances after 30 s: $health" >&2
    return 1
}
# both_serve TAG: reads through the gateway, 20 at a time, with request ids TAG-n, until each
# product replica's log shows some of them (both in the gateway's balancer and answering); a
# replica whose breaker is still open after a restart gets its turn within a few rounds.
both_serve() {
    local i=0 round counts n replica missing
    for round in 1 2 3 4; do
        for _ in $(seq 1 20); do
            i=$((i + 1))
            [ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-request-id: $1-$i" "$gateway/api/products/$((i % 50 + 1))")" = 200 ] \
                || { echo "compose test: GET /api/products/$((i % 50 + 1)) did not answer 200" >&2; return 1; }
        done
        counts="" missing=""
        for replica in product-1 product-2; do
            n="$(podman logs "$(container "$replica")" 2>&1 | grep -c "request_id=$1-" || true)"
            counts="$counts $replica: $n"
            [ "$n" -gt 0 ] || missing="$missing $replica"
        done
        if [ -z "$missing" ]; then
            say "  $i reads through the gateway, served by$counts"
            return
        fi
        sleep 2
    done
    echo "compose test: after $i reads,$missing served none ($counts)" >&2
    return 1
}
say "through $gateway: both product replicas"
replicas 2
both_serve "compose-test-$$-a"

say "the seed's curls (examples/seed-curls.sh)"
bash examples/seed-curls.sh "$gateway" > "$logs/seed-curls.log" 2>&1 || { cat "$logs/seed-curls.log" >&2; exit 1; }
# Each call as METHOD path -> status (the whole exchange is in the log file).
awk -v base="$gateway" '/^\$ curl/ { m = "GET"; u = ""; for (i = 3; i <= NF; i++) { if ($i == "-X") m = $(i + 1);
        if (u == "" && index($i, base) == 1) u = substr($i, length(base) + 1) } }
    /^[0-9][0-9][0-9] / && u != "" { print "    " m " " u " -> " $1; u = "" }' "$logs/seed-curls.log"
tail -n 1 "$logs/seed-curls.log" | sed 's/^/    /'

say "the REST walkthrough ($bin_dir/rest-walkthrough)"
"$bin_dir/rest-walkthrough" "$gateway" > "$logs/rest-walkthrough.log" 2>&1 || { cat "$logs/rest-walkthrough.log" >&2; exit 1; }
awk '/^> / { call = $2 " " $3 } /^< / { print "    " call " -> " $2 }' "$logs/rest-walkthrough.log"
tail -n 1 "$logs/rest-walkthrough.log" | sed 's/^/    /'

# --- 7. a restart and a crash -----------------------------------------------------------------
say "restart product-1 (podman restart: SIGTERM, drain, start again), then the same checks"
podman restart -t 10 "$(container product-1)" 2>&1 < /dev/null | quiet >/dev/null
wait_for product-1 healthy 70
replicas 2
both_serve "compose-test-$$-b"

say "crash product-2 (kill -9 its process); its restart policy (unless-stopped) starts it again"
c="$(container product-2)"
kill -KILL "$(podman inspect -f '{{.State.Pid}}' "$c")"
started=$SECONDS
until [ "$(podman inspect -f '{{.RestartCount}} {{.State.Status}}' "$c")" = "1 running" ]; do
    [ $((SECONDS - started)) -lt 30 ] || { echo "compose test: product-2 was not restarted within 30 s" >&2; exit 1; }
    sleep 0.5
done
say "  product-2: restarted by podman (restart count 1)"
wait_for product-2 healthy 70
replicas 2
both_serve "compose-test-$$-c"
# The order path after the restart (the order service's own balancer over the products): the
# seed's curls once more. With the two runs above that is 3 sign-ups and 4 logins from one
# address within a minute, inside gateway.toml's limits (3 and 5 a minute).
bash examples/seed-curls.sh "$gateway" > "$logs/seed-curls-2.log" 2>&1 || { cat "$logs/seed-curls-2.log" >&2; exit 1; }
say "  the seed's curls again: $(tail -n 1 "$logs/seed-curls-2.log")"
completed=1
