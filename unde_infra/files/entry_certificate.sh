#!/bin/sh
# Obtain the entry point's first certificate from Let's Encrypt and switch the TLS site on.
# Delivered by unde-infra; run by the setup and by a timer until the certificate exists (DNS may
# point here only after the first run). Renewals are certbot.timer's, with the same challenge
# (certbot keeps the hooks with the certificate). Its parameters are in "$0.env" beside it:
# DOMAIN, EMAIL, WEBROOT, CERT_DIR, TLS_SITE, TLS_ENABLED, CHALLENGE (http-01 through nginx's
# webroot, or dns-01 through certbot's manual hooks DNS_AUTH_HOOK and DNS_CLEANUP_HOOK: the
# standby entry, which the entry's name does not reach until a failover).
set -eu
# shellcheck source=/dev/null
. "$0.env"
if [ ! -s "$CERT_DIR/fullchain.pem" ]; then
    if [ "$CHALLENGE" = dns-01 ]; then
        certbot certonly --non-interactive --agree-tos --email "$EMAIL" --manual --preferred-challenges dns \
            --manual-auth-hook "$DNS_AUTH_HOOK" --manual-cleanup-hook "$DNS_CLEANUP_HOOK" \
            --domain "$DOMAIN" --keep-until-expiring
    else
        certbot certonly --non-interactive --agree-tos --email "$EMAIL" --webroot --webroot-path "$WEBROOT" \
            --domain "$DOMAIN" --keep-until-expiring
    fi
fi
if [ ! -e "$TLS_ENABLED/$(basename "$TLS_SITE")" ]; then
    ln -s "$TLS_SITE" "$TLS_ENABLED/"
    nginx -t
    systemctl reload nginx
fi
