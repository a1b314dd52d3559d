#!/bin/sh
# Obtain the entry point's first certificate from Let's Encrypt (HTTP-01 through nginx's webroot)
# and switch the TLS site on. Delivered by unde-infra; run by the setup and by a timer until the
# certificate exists (DNS may point here only after the first run). Renewals are certbot.timer's.
# Its parameters are in "$0.env" beside it: DOMAIN, EMAIL, WEBROOT, CERT_DIR,
# TLS_SITE and TLS_ENABLED.
set -eu
# shellcheck source=/dev/null
. "$0.env"
if [ ! -s "$CERT_DIR/fullchain.pem" ]; then
    certbot certonly --non-interactive --agree-tos --email "$EMAIL" --webroot --webroot-path "$WEBROOT" \
        --domain "$DOMAIN" --keep-until-expiring
fi
if [ ! -e "$TLS_ENABLED/$(basename "$TLS_SITE")" ]; then
    ln -s "$TLS_SITE" "$TLS_ENABLED/"
    nginx -t
    systemctl reload nginx
fi
