#!/usr/bin/env bash
# dehydrated hook: installs each issued certificate for nginx and reloads nginx.
#
# deploy_cert: copies the key and the full chain to $NGINX_CERT_DIR/<domain>/ (privkey.pem,
# fullchain.pem), checks the key matches the certificate, runs $NGINX_TEST and
# $NGINX_RELOAD. When any step fails the previous files are put back, nginx keeps serving
# the old certificate, and the hook exits non-zero with a message (dehydrated then fails).
# invalid_challenge / request_failure: say what failed on stderr (dehydrated exits non-zero).
# Every other handler is accepted and ignored, so a newer dehydrated keeps working.
set -euo pipefail

NGINX_CERT_DIR="${NGINX_CERT_DIR:-/etc/nginx/tls}"
NGINX_TEST="${NGINX_TEST:-nginx -t -q}"
NGINX_RELOAD="${NGINX_RELOAD:-systemctl reload nginx}"

fail() {
    echo "hook.sh: ERROR: $*" >&2
    exit 1
}

pubkey_of_cert() { openssl x509 -noout -pubkey -in "$1" | openssl pkey -pubin -outform DER | sha256sum; }
pubkey_of_key() { openssl pkey -in "$1" -pubout -outform DER | sha256sum; }

deploy_cert() {
    local domain="$1" keyfile="$2" fullchainfile="$4"
    case "$domain" in
        ""|*/*|.*) fail "refusing to deploy a certificate for the name '${domain}'" ;;
    esac
    [[ "$(pubkey_of_cert "$fullchainfile")" == "$(pubkey_of_key "$keyfile")" ]] \
        || fail "${domain}: the new certificate does not match its key; nothing deployed"

    local dest="${NGINX_CERT_DIR}/${domain}"
    install -d -m 0755 "$NGINX_CERT_DIR"
    install -d -m 0700 "$dest"
    # Stage both files beside their final names (same file system: the renames are atomic),
    # keep the current ones as *.old, then swap.
    install -m 0600 "$keyfile" "$dest/privkey.pem.new"
    install -m 0644 "$fullchainfile" "$dest/fullchain.pem.new"
    local had_old=no
    if [[ -e "$dest/fullchain.pem" && -e "$dest/privkey.pem" ]]; then
        had_old=yes
        cp -p "$dest/privkey.pem" "$dest/privkey.pem.old"
        cp -p "$dest/fullchain.pem" "$dest/fullchain.pem.old"
    fi
    mv -f "$dest/privkey.pem.new" "$dest/privkey.pem"
    mv -f "$dest/fullchain.pem.new" "$dest/fullchain.pem"

    local why=""
    if ! out="$($NGINX_TEST 2>&1)"; then
        why="nginx refused the configuration with the new certificate: ${out}"
    elif ! out="$($NGINX_RELOAD 2>&1)"; then
        why="nginx reload failed: ${out}"
    fi
    if [[ -n "$why" ]]; then
        if [[ "$had_old" == yes ]]; then
            mv -f "$dest/privkey.pem.old" "$dest/privkey.pem"
            mv -f "$dest/fullchain.pem.old" "$dest/fullchain.pem"
            $NGINX_RELOAD >/dev/null 2>&1 || true
            fail "${domain}: ${why}; the previous certificate was put back"
        fi
        fail "${domain}: ${why}"
    fi
    rm -f "$dest/privkey.pem.old" "$dest/fullchain.pem.old"
    echo "hook.sh: ${domain}: deployed $(openssl x509 -noout -enddate -in "$dest/fullchain.pem") to ${dest} and reloaded nginx"
}

invalid_challenge() {
    local domain="$1" response="$2"
    echo "hook.sh: ERROR: ${domain}: the ACME server could not validate the challenge" \
         "(is http://${domain}/.well-known/acme-challenge/ served by nginx?): ${response}" >&2
}

request_failure() {
    local status="$1" reason="$2" reqtype="$3"
    echo "hook.sh: ERROR: ACME request ${reqtype} failed with HTTP ${status}: ${reason}" >&2
}

handler="${1:-}"
shift || true
case "$handler" in
    deploy_cert) deploy_cert "$@" ;;
    invalid_challenge) invalid_challenge "$@" ;;
    request_failure) request_failure "$@" ;;
    *) : ;;  # deploy_challenge, clean_challenge (WELLKNOWN does it), unchanged_cert, ...
esac
