#!/usr/bin/env bash
# Makes development certificates (ECDSA P-256) in DIR: a CA, the sidecar's server certificate and
# callers' client certificates. For development and tests only; never for production.
#   ca.pem ca.key                   the development CA (callers and server chain to it)
#   server.pem server.key           SAN DNS:localhost, IP:127.0.0.1, URI:spiffe://dev.local/pinghelp
#   client.pem client.key           SAN URI:spiffe://dev.local/caller
#   intruder.pem intruder.key       same CA, SAN URI:spiffe://dev.local/intruder
#   expired.pem expired.key         same CA, SAN URI:spiffe://dev.local/caller, expired in 2020
#   other-ca.pem stranger.pem stranger.key   a client certificate from an unrelated CA
# Usage: deploy/make-certs.sh DIR [SERVER_NAME]
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR [SERVER_NAME]}
name=${2:-pinghelp}
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/O=Sidecar Dev/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}

leaf() { # leaf NAME CA CN SAN USAGE [startdate enddate]
  local n=$1 issuer=$2 cn=$3 san=$4 usage=$5
  key "$n.key"
  openssl req -new -key "$n.key" -subj "/O=Sidecar Dev/CN=$cn" -out "$n.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$san" "$usage" > "$n.ext"
  if [[ $# -ge 7 ]]; then
    # An expired certificate needs explicit dates, which only 'openssl ca' takes.
    mkdir -p ca-db && : > ca-db/index.txt && echo 1000 > ca-db/serial
    cat > ca-db/ca.cnf <<CNF
[ ca ]
default_ca = dev
[ dev ]
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
CNF
    openssl ca -batch -notext -config ca-db/ca.cnf -cert "$issuer.pem" -keyfile "$issuer.key" \
      -in "$n.csr" -out "$n.pem" -startdate "$6" -enddate "$7" -extfile "$n.ext" 2>/dev/null
    rm -rf ca-db
  else
    openssl x509 -req -in "$n.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
      -days 825 -sha256 -extfile "$n.ext" -out "$n.pem" 2>/dev/null
  fi
  rm -f "$n.csr" "$n.ext"
}

ca ca "Sidecar Dev CA"
leaf server ca "$name" "DNS:localhost,IP:127.0.0.1,URI:spiffe://dev.local/$name" serverAuth,clientAuth
leaf client ca caller "URI:spiffe://dev.local/caller" clientAuth
leaf intruder ca intruder "URI:spiffe://dev.local/intruder" clientAuth
leaf expired ca caller "URI:spiffe://dev.local/caller" clientAuth 20200101000000Z 20200102000000Z
ca other-ca "Unrelated CA"
leaf stranger other-ca stranger "URI:spiffe://elsewhere/stranger" clientAuth
rm -f ./*.srl
chmod 644 ./*.pem
echo "certificates in $(pwd)"
