#!/bin/sh
# nginx on the API entry host and its TLS certificate. Delivered by unde-infra and run after any
# entry-point file changed. Its parameters are in "$0.env" beside it: DOMAIN, EMAIL,
# WEBROOT, CERT_DIR, TLS_SITE, TLS_ENABLED, CERTIFICATE_SCRIPT, CERTIFICATE_TIMER and CHALLENGE.
set -eu
# shellcheck source=/dev/null
. "$0.env"
# Debian's default site also claims port 80 as the default server. On a first install nginx's
# postinst would enable it and start nginx beside the delivered site, and the start (and so the
# install) would fail on the duplicate: a placeholder at its path keeps it from being enabled.
if ! test -e /usr/sbin/nginx; then
    install -d -m 0755 /etc/nginx/sites-enabled
    : > /etc/nginx/sites-enabled/default
fi
"$APT_INSTALL" nginx certbot
install -d -m 0755 "$WEBROOT" "$TLS_ENABLED"
rm -f /etc/nginx/sites-enabled/default
# The TLS site only while its certificate exists (another domain's link goes too).
rm -f "$TLS_ENABLED"/*.conf
if [ -s "$CERT_DIR/fullchain.pem" ]; then
    ln -s "$TLS_SITE" "$TLS_ENABLED/"
fi
nginx -t
systemctl enable nginx
systemctl reload-or-restart nginx
systemctl daemon-reload
# Renewal: Debian's certbot.timer (twice a day); the first certificate: ours, until it exists.
systemctl enable --now certbot.timer "$CERTIFICATE_TIMER"
if ! "$CERTIFICATE_SCRIPT"; then
    if [ "$CHALLENGE" = dns-01 ]; then
        hint="can the DNS-01 hook set the zone's TXT record (its token, the Cloud API)?"
    else
        hint="does its DNS point at this host, is port 80 open?"
    fi
    echo "no certificate for $DOMAIN yet ($hint); $CERTIFICATE_TIMER tries again" >&2
fi
