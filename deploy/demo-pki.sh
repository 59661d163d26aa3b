#!/usr/bin/env bash
# One-shot set-up of the demo federation of deploy/compose.yaml (the `pki` service), with the
# operator's own commands (docs/federation.md §1).  Installed in the image as
# /usr/local/bin/eap-demo-pki.
#
#   1. a demo federation CA in $EAP_DEMO_CA (`eap-node certs init-ca`);
#   2. for every node of $EAP_DEMO_NODES: its home $EAP_DEMO_HOMES/<name> (created by
#      eap-entrypoint from EAP_NODE_ID, EAP_ZONE, EAP_DB_URL, EAP_FEDERATION_ENDPOINT), a TLS
#      certificate from the CA (`eap-node certs issue --host <name>`), and its signed
#      descriptor plus signing-key fingerprint in $EAP_DEMO_DESCRIPTORS
#      (`eap-node descriptor --out`);
#   3. every node trusts every other one: `eap-node peer add FILE --fingerprint SHA256:...`.
#
# EAP_DEMO_NODES has one node per line:  <name> <node id> <zone> <endpoint> [<database URL>]
# (default database: SQLite in the home).  What exists is kept (CA, homes, certificates), so
# the service may run again on every `docker compose up`: descriptors are signed again and the
# trust entries refreshed (`peer add --update` keeps handshake state and sync cursors).
#
# Started as root (compose gives fresh volumes to root), it hands the CA, descriptor and home
# folders to $EAP_DEMO_OWNER (uid:gid of the image's user) and runs everything else as that
# user; started as any other user it runs as that user.
set -euo pipefail

ca="${EAP_DEMO_CA:-/pki/ca}"
descriptors="${EAP_DEMO_DESCRIPTORS:-/pki/descriptors}"
homes="${EAP_DEMO_HOMES:-/homes}"
owner="${EAP_DEMO_OWNER:-10001:10001}"
nodes="${EAP_DEMO_NODES:?EAP_DEMO_NODES must list the nodes: name node-id zone endpoint [db-url]}"

log() { printf 'eap-demo-pki: %s\n' "$*" >&2; }

# "name node_id zone endpoint db" lines without comments and blank lines.
node_lines() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' <<<"$nodes"; }

if [[ "$(id -u)" == 0 && "${owner%%:*}" != 0 ]]; then
    dirs=("$ca" "$descriptors")
    while read -r name _; do dirs+=("$homes/$name"); done < <(node_lines)
    for d in "${dirs[@]}"; do
        mkdir -p "$d"
        if [[ "$(stat -c %u "$d")" == 0 ]]; then # a fresh volume: give it to the node user
            chmod 700 "$d"
            chown "$owner" "$d"
        fi
    done
    log "continuing as $owner"
    exec python3 -c '
import os, sys
uid, gid = (int(v) for v in sys.argv[1].split(":"))
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
os.execvp(sys.argv[2], sys.argv[2:])
' "$owner" "$0" "$@"
fi

umask 077
if [[ ! -f "$ca/ca.crt" ]]; then
    eap-node certs init-ca --dir "$ca" --name "EAP compose demo federation CA"
fi
mkdir -p "$descriptors"

while read -r name node_id zone endpoint db; do
    home="$homes/$name"
    if [[ ! -f "$home/eap-node.toml" ]]; then
        EAP_NODE_HOME="$home" EAP_NODE_ID="$node_id" EAP_ZONE="$zone" EAP_DB_URL="${db:-}" \
            EAP_FEDERATION_ENDPOINT="$endpoint" eap-entrypoint status </dev/null
    fi
    if [[ ! -f "$home/tls/node.crt" ]]; then
        eap-node certs issue --ca "$ca" --home "$home" --host "$name" </dev/null
    fi
    # `descriptor --out` names the signing key's fingerprint on stderr: what an operator reads
    # to the peer's operator over the phone.
    said="$(eap-node descriptor --home "$home" --out "$descriptors/$node_id.json" 2>&1 </dev/null)"
    fingerprint="$(sed -n 's/.* fingerprint \(SHA256:[^[:space:]]*\).*/\1/p' <<<"$said")"
    [[ -n "$fingerprint" ]] || { log "no fingerprint from eap-node descriptor: $said"; exit 1; }
    printf '%s\n' "$fingerprint" >"$descriptors/$node_id.fingerprint"
    log "$node_id: descriptor $descriptors/$node_id.json, key fingerprint $fingerprint"
done < <(node_lines)

while read -r name node_id _; do
    while read -r _ peer_id _; do
        [[ "$peer_id" != "$node_id" ]] || continue
        eap-node peer add "$descriptors/$peer_id.json" --update \
            --fingerprint "$(cat "$descriptors/$peer_id.fingerprint")" --home "$homes/$name" \
            </dev/null
    done < <(node_lines)
done < <(node_lines)
log "federation ready: $(node_lines | awk '{print $2}' | paste -sd ' ' -)"
