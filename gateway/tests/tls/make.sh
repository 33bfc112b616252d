#!/bin/sh
# Makes the test CA and the gateway's test certificate (localhost, 127.0.0.1), valid from 2000
# to 2126 so a machine's clock never matters. Test use only: the keys are public, and the CA's
# key is thrown away. Run from this folder: sh make.sh
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out gateway.key
cat > "$work/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
authorityKeyIdentifier = keyid
CNF
: > "$work/index.txt"
echo 01 > "$work/serial"
openssl req -new -key "$work/ca.key" -subj "/CN=shop test CA" -out "$work/ca.csr"
openssl ca -batch -config "$work/ca.cnf" -selfsign -keyfile "$work/ca.key" -in "$work/ca.csr" \
  -extensions ca_ext -startdate 20000101000000Z -enddate 21260101000000Z -notext -out ca.pem
openssl req -new -key gateway.key -subj "/CN=localhost" -out "$work/gateway.csr"
openssl ca -batch -config "$work/ca.cnf" -cert ca.pem -keyfile "$work/ca.key" -in "$work/gateway.csr" \
  -extensions leaf_ext -startdate 20000101000000Z -enddate 21260101000000Z -notext -out gateway.pem
