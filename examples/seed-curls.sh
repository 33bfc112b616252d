#!/usr/bin/env bash
# The curls of the seed tutorial's README, against the running stack (`just up`), each checked
# for the status it should get: the catalogue publicly; an account, a token, an order and the
# account's orders with it. Prints every call and answer; exits 1 at the first surprise.
#
#   just up && bash examples/seed-curls.sh [http://localhost:8080]
set -euo pipefail
base="${1:-http://localhost:8080}"
name="alice$(date +%s%N | tail -c 7)"

# check EXPECTED CURL-ARGS...: runs curl, prints the call and answer, checks the status.
check() {
    local want="$1"; shift
    echo "\$ curl $*"
    local out status
    out="$(curl -s -w '\n%{http_code}' "$@")"
    status="${out##*$'\n'}"
    body="${out%$'\n'*}"
    echo "$status $body" | cut -c1-300
    echo
    if [ "$status" != "$want" ]; then
        echo "expected $want" >&2
        exit 1
    fi
}

check 200 "$base/api/products/1"
check 200 "$base/api/products?q=%E6%89%8B%E6%9C%BA&page_size=5"
check 201 -X POST "$base/api/users" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$name\",\"email\":\"$name@example.com\",\"password\":\"correct horse\"}"
user_id="$(sed 's/.*"id":\([0-9]*\).*/\1/' <<< "$body")"
check 200 -X POST "$base/api/users/login" -H 'Content-Type: application/json' \
    -d "{\"username\":\"$name\",\"password\":\"correct horse\"}"
token="$(sed 's/.*"access_token":"\([^"]*\)".*/\1/' <<< "$body")"
check 201 -X POST "$base/api/orders" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"items":[{"product_id":1,"quantity":1}],"shipping_address":"1 Main St"}'
check 200 "$base/api/orders/user/$user_id" -H "Authorization: Bearer $token"
check 401 "$base/api/orders/user/$user_id"
echo "seed curls: all answered as expected"
