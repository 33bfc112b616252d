"""What `docker-compose config` does not check about docker-compose.yml: that every build points
at a Dockerfile that exists and defines the target, that the files the Dockerfile copies from
the repository exist (but the host binaries of BINARIES=host, which `just compose-test` puts in
target/container-bin/), that the build arguments' defaults are the Dockerfile's, that fixed
addresses are unique and inside the network's subnet, that every service and the gateway's file
name the Consul container's address, and that the order service sends payment reports to the
gateway container's listener."""

import ipaddress
import pathlib
import re
import sys

import yaml

root = pathlib.Path(__file__).resolve().parents[2]
compose = yaml.safe_load((root / sys.argv[1]).read_text())
problems = []

subnet = ipaddress.ip_network(compose["networks"]["shop"]["ipam"]["config"][0]["subnet"])
consul_ip = compose["services"]["consul"]["networks"]["shop"]["ipv4_address"]
consul_url = f"http://{consul_ip}:8500"
seen = {}
for name, svc in compose["services"].items():
    build = svc.get("build")
    if build:
        dockerfile = root / build.get("context", ".") / build["dockerfile"]
        if not dockerfile.is_file():
            problems.append(f"{name}: no Dockerfile at {dockerfile}")
            continue
        text = dockerfile.read_text()
        targets = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
        if build.get("target") not in targets:
            problems.append(f"{name}: target {build.get('target')!r} not in {dockerfile.name} ({targets})")
        for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, re.M):
            if src != "." and not src.startswith("target/container-bin/") and not (root / src).exists():
                problems.append(f"{dockerfile.name}: COPY {src}: no such file in the repository")
        # `NAME: ${VAR:-default}` must default to what the Dockerfile's `ARG NAME=default` says,
        # so Compose without the variable builds what `docker build` builds.
        arg_defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
        for arg, value in (build.get("args") or {}).items():
            m = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
            if arg not in arg_defaults:
                problems.append(f"{name}: build argument {arg} is not an ARG of {dockerfile.name}")
            elif not m or m.group(1) != arg_defaults[arg]:
                problems.append(f"{name}: build argument {arg} = {value!r} should default to {arg_defaults[arg]!r} as {dockerfile.name} does")
    nets = svc.get("networks")
    if isinstance(nets, dict):
        ip = (nets.get("shop") or {}).get("ipv4_address")
        if ip:
            if ipaddress.ip_address(ip) not in subnet:
                problems.append(f"{name}: {ip} is outside {subnet}")
            if ip in seen:
                problems.append(f"{name}: {ip} is also {seen[ip]}'s address")
            seen[ip] = name
            advertise = (svc.get("environment") or {}).get("SHOP_CONSUL_ADVERTISE")
            if advertise and advertise != ip:
                problems.append(f"{name}: announces {advertise} but has {ip}")
    env = svc.get("environment") or {}
    if "SHOP_CONSUL_ADDR" in env and env["SHOP_CONSUL_ADDR"] != consul_url:
        problems.append(f"{name}: SHOP_CONSUL_ADDR {env['SHOP_CONSUL_ADDR']} is not {consul_url}")
    if name in ("user", "product-1", "product-2", "order") and "SHOP_CONSUL_ADVERTISE" not in env:
        problems.append(f"{name}: no SHOP_CONSUL_ADVERTISE: Consul would announce its own address")

gateway_toml = (root / "examples/compose/gateway.toml").read_text()
if f'consul = "{consul_url}"' not in gateway_toml:
    problems.append(f"examples/compose/gateway.toml does not name Consul at {consul_url}")

# The payment provider reports to the gateway's webhook route: the gateway container's address,
# on the port its file listens on.
order_env = compose["services"]["order"].get("environment") or {}
gateway_ip = compose["services"]["gateway"]["networks"]["shop"]["ipv4_address"]
listen = re.search(r'^address = "[^"]*:(\d+)"', gateway_toml, re.M)
webhook = f"http://{gateway_ip}:{listen.group(1) if listen else '?'}/api/payments/webhook"
if order_env.get("SHOP_PAYMENTS_WEBHOOK_URL") != webhook:
    problems.append(f"order: SHOP_PAYMENTS_WEBHOOK_URL {order_env.get('SHOP_PAYMENTS_WEBHOOK_URL')} is not {webhook}")
if "SHOP_PAYMENTS_WEBHOOK_SECRET" not in order_env:
    problems.append("order: no SHOP_PAYMENTS_WEBHOOK_SECRET: payments would be refused")

if problems:
    print("docker-compose.yml: " + str(len(problems)) + " problem(s)", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"docker-compose.yml: ok ({len(compose['services'])} services, Consul at {consul_url})")
