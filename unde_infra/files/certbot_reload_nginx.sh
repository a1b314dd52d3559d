#!/bin/sh
# certbot deploy hook (delivered by unde-infra): after a renewal, nginx serves the new certificate.
set -eu
nginx -t -q
systemctl reload nginx
