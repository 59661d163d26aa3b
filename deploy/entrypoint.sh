#!/usr/bin/env bash
# Container entrypoint of eap-node: prepares the node home, then runs `eap-node "$@"`
# (`serve` when no arguments are given).  Installed in the image as /usr/local/bin/eap-entrypoint.
#
# The home is $EAP_NODE_HOME (default /var/lib/eap, the image's volume).
#
# First start (the home holds no eap-node.toml), only when told which node to create:
#   * EAP_SEED_DIR set: the node's identity is installed from that folder (node-secret,
#     api-token, keyring.json, ed25519_*.pem: the Secret made by deploy/k8s_bootstrap.py) and
#     the config comes from EAP_CONFIG_FILE, else from the variables below.  The database must
#     already belong to the node (several replicas sharing one PostgreSQL database).
#   * otherwise `eap-node init` creates a new identity, with the settings of EAP_CONFIG_FILE,
#     else of EAP_NODE_ID, EAP_ZONE, EAP_DB_URL (default: SQLite in the home),
#     EAP_API_LISTEN (0.0.0.0:7443), EAP_FEDERATION_LISTEN (0.0.0.0:7444) and
#     EAP_FEDERATION_ENDPOINT (what the descriptor advertises; default: the listen address).
#   Without EAP_CONFIG_FILE, a local API on a non-loopback address (the image's 0.0.0.0:7443)
#   is configured for TLS with the node's certificate: [api] tls_cert = "tls/node.crt",
#   tls_key = "tls/node.key" (installed from EAP_TLS_DIR, or issued by `eap-node certs issue`
#   as the compose `pki` service does); `eap-node serve` refuses to start until they exist.
#   EAP_API_ALLOW_PLAINTEXT=1 writes [api] allow_plaintext_remote = true instead (tokens in
#   clear: only behind a network that encrypts, such as a service mesh).
#   The new home is made in <home>/.init and moved into place when complete, eap-node.toml
#   last, so an interrupted first start (database not reachable yet...) is simply retried.
#   Without EAP_SEED_DIR, EAP_CONFIG_FILE or EAP_NODE_ID no home is created: `eap-node`
#   runs as is (`--version`, `certs init-ca`, or its own "no node" error).
#
# Every start, when the home exists:
#   * EAP_CONFIG_FILE set (a Kubernetes ConfigMap): installed as <home>/eap-node.toml; it must
#     name the node id the home already holds;
#   * EAP_TLS_DIR set (a Secret): node.crt, ca.crt (0644) and node.key (0600) are copied into
#     <home>/tls, where `eap-node serve` and `eap-node descriptor` look for them.
# Nothing else of an existing home is ever changed: keys, node secret, token and database stay.
#
# Exit status 12 (configuration error, as eap-node's own) when the settings are unusable.
set -euo pipefail

log() { printf 'eap-entrypoint: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 12
}

home="${EAP_NODE_HOME:-/var/lib/eap}"
stage_name=".init"
# What `eap-node init` writes into a home, eap-node.toml last (it marks a complete home).
home_files=(node-secret api-token keys eap-node.toml)

# Node id, zone, database URL, API and federation listen addresses of the TOML file $1, one
# per line (empty lines for absent optional values).
config_values() {
    python3 - "$1" <<'PY'
import sys
import tomllib

path = sys.argv[1]
try:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    values = [data["node"]["id"], data["node"]["zone"], data["database"]["url"]]
except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
    sys.exit(f"cannot use {path}: {type(exc).__name__}: {exc}")
values += [data.get("api", {}).get("listen", ""), data.get("federation", {}).get("listen", "")]
print("\n".join(str(v) for v in values))
PY
}

# Copies the identity of $EAP_SEED_DIR into the new home $1 (modes as `eap-node init` makes).
install_seed() {
    local src="$EAP_SEED_DIR" dst="$1" pems
    for f in node-secret api-token keyring.json; do
        [[ -r "$src/$f" ]] || die "EAP_SEED_DIR $src holds no readable $f"
    done
    shopt -s nullglob
    pems=("$src"/ed25519_*.pem)
    shopt -u nullglob
    ((${#pems[@]})) || die "EAP_SEED_DIR $src holds no ed25519_*.pem private key"
    mkdir -p "$dst/keys"
    chmod 700 "$dst" "$dst/keys"
    # install(1) reads through the symbolic links of Kubernetes volumes and sets the mode.
    install -m 600 "$src/node-secret" "$src/api-token" "$dst/"
    install -m 600 "$src/keyring.json" "${pems[@]}" "$dst/keys/"
}

# Writes <$1>/eap-node.toml from the settings (node id, zone, db, api, federation listen).
write_config() {
    python3 - "$@" <<'PY'
import sys
from pathlib import Path

from eap.node.config import NodeConfig

home, node_id, zone, database, api, federation = sys.argv[1:]
NodeConfig(home=Path(home), node_id=node_id, zone=zone, database=database,
           api_listen=api, federation_listen=federation).save()
PY
}

# Adds the TLS settings of the local API to the config of the new home $1 when its [api]
# listen address is not loopback (see the header).
api_tls_config() {
    python3 - "$1" "${EAP_API_ALLOW_PLAINTEXT:-}" <<'PY'
import sys
import tomllib
from pathlib import Path

import tomli_w

from eap.node.api.tls import is_loopback

path, plaintext = Path(sys.argv[1]) / "eap-node.toml", sys.argv[2] in ("1", "true", "yes")
data = tomllib.loads(path.read_text())
api = data.setdefault("api", {})
if not is_loopback(api.get("listen", "127.0.0.1:7443")) and not api.get("tls_cert"):
    if plaintext:
        api["allow_plaintext_remote"] = True
    else:
        api.update(tls_cert="tls/node.crt", tls_key="tls/node.key")
    path.write_text(tomli_w.dumps(data))
PY
}

create_home() {
    local stage="$home/$stage_name" node_id zone db api fed endpoint="" values
    if [[ -n "${EAP_CONFIG_FILE:-}" ]]; then
        values="$(config_values "$EAP_CONFIG_FILE")" || die "invalid EAP_CONFIG_FILE"
        { read -r node_id; read -r zone; read -r db; read -r api; read -r fed; } <<<"$values"
    else
        node_id="${EAP_NODE_ID:-}"
        zone="${EAP_ZONE:-}"
        db="${EAP_DB_URL:-}"
        api="${EAP_API_LISTEN:-}"
        fed="${EAP_FEDERATION_LISTEN:-}"
        endpoint="${EAP_FEDERATION_ENDPOINT:-}"
        [[ -n "$node_id" ]] || die "EAP_NODE_ID is required to create a node home"
        [[ -n "$zone" ]] || die "EAP_ZONE is required to create a node home"
    fi
    db="${db:-sqlite:///$home/node.db}"
    api="${api:-0.0.0.0:7443}"
    fed="${fed:-0.0.0.0:7444}"

    if [[ -f "$stage/.complete" ]]; then
        log "finishing the interrupted creation of $home"
    else
        rm -rf "$stage"
        for f in "${home_files[@]}"; do
            [[ ! -e "$home/$f" ]] ||
                die "$home holds $f but no eap-node.toml: an incomplete home; restore it from a backup or empty the folder"
        done
        if [[ -n "${EAP_SEED_DIR:-}" ]]; then
            log "installing node $node_id from $EAP_SEED_DIR"
            install_seed "$stage"
            if [[ -n "${EAP_CONFIG_FILE:-}" ]]; then
                install -m 644 "$EAP_CONFIG_FILE" "$stage/eap-node.toml"
            else
                write_config "$stage" "$node_id" "$zone" "$db" "$api" "$fed"
            fi
        else
            log "creating node $node_id in $home"
            # stdout stays the command's own (`docker run ... status --json | jq`)
            eap-node init --home "$stage" --node-id "$node_id" --zone "$zone" --db "$db" \
                --api-listen "$api" --federation-listen "$fed" >&2
        fi
        [[ -n "${EAP_CONFIG_FILE:-}" ]] || api_tls_config "$stage"
        if [[ -n "$endpoint" ]]; then
            python3 -c 'import sys; from eap.node.federation.settings import update_settings
update_settings(sys.argv[1], endpoint=sys.argv[2])' "$stage" "$endpoint"
        fi
        touch "$stage/.complete"
    fi
    for f in "${home_files[@]}"; do
        if [[ -e "$stage/$f" ]]; then
            [[ ! -e "$home/$f" ]] || die "$home/$f exists already; not replacing it with $stage/$f"
            mv "$stage/$f" "$home/$f"
        fi
    done
    rm -rf "$stage"
}

install_config() {
    local want have
    [[ -r "$EAP_CONFIG_FILE" ]] || die "EAP_CONFIG_FILE $EAP_CONFIG_FILE is not readable"
    want="$(config_values "$EAP_CONFIG_FILE")" || die "invalid EAP_CONFIG_FILE"
    have="$(config_values "$home/eap-node.toml")" || die "invalid $home/eap-node.toml"
    want="${want%%$'\n'*}" # the node id: the first line
    have="${have%%$'\n'*}"
    [[ "$want" == "$have" ]] ||
        die "EAP_CONFIG_FILE is for node '$want' but $home holds node '$have'"
    if ! cmp -s "$EAP_CONFIG_FILE" "$home/eap-node.toml"; then
        install -m 644 "$EAP_CONFIG_FILE" "$home/eap-node.toml.new"
        mv -f "$home/eap-node.toml.new" "$home/eap-node.toml"
        log "installed $EAP_CONFIG_FILE as $home/eap-node.toml"
    fi
}

install_tls() {
    local src="$EAP_TLS_DIR"
    if [[ ! -r "$src/node.crt" || ! -r "$src/node.key" || ! -r "$src/ca.crt" ]]; then
        log "EAP_TLS_DIR $src lacks node.crt, node.key or ca.crt: TLS material left as it is"
        return
    fi
    mkdir -p "$home/tls"
    chmod 700 "$home/tls"
    install -m 644 "$src/node.crt" "$src/ca.crt" "$home/tls/"
    install -m 600 "$src/node.key" "$home/tls/"
}

if [[ ! -f "$home/eap-node.toml" ]] &&
    [[ -n "${EAP_SEED_DIR:-}${EAP_CONFIG_FILE:-}${EAP_NODE_ID:-}" ]]; then
    mkdir -p "$home"
    home="$(cd "$home" && pwd -P)"
    # The home may be a volume root we cannot chmod (Kubernetes fsGroup); keys/ and tls/ are
    # 0700 in any case.
    chmod 700 "$home" 2>/dev/null || true
    create_home
fi
if [[ -f "$home/eap-node.toml" ]]; then
    [[ -z "${EAP_CONFIG_FILE:-}" ]] || install_config
    [[ -z "${EAP_TLS_DIR:-}" ]] || install_tls
fi

export EAP_NODE_HOME="$home"
if (($# == 0)); then
    set -- serve
fi
exec eap-node "$@"
