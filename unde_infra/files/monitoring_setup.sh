#!/bin/sh
# The monitoring server: Prometheus and Alertmanager from Debian, Grafana from its own apt
# repository; the configuration checked, then the services reloaded. Delivered by unde-infra and
# run after any monitoring file changed. Its parameters are in "$0.env" beside it:
# GRAFANA_KEY_URL, GRAFANA_KEYRING, GRAFANA_SOURCE, PROMETHEUS_CONFIG and SERVICES.
set -eu
# shellcheck source=/dev/null
. "$0.env"
"$APT_INSTALL" prometheus prometheus-alertmanager
systemctl daemon-reload
promtool check config "$PROMETHEUS_CONFIG"
# shellcheck disable=SC2086
systemctl enable $SERVICES
# shellcheck disable=SC2086
systemctl reload-or-restart $SERVICES
# Grafana last, on the main path only (GRAFANA_SOURCE empty: the second alert path has none): it
# comes from Grafana's own repository, and alerting above must not wait on a third party.
if [ -n "$GRAFANA_SOURCE" ]; then
    if ! test -x /usr/sbin/grafana-server; then
        install -d -m 0755 "$(dirname "$GRAFANA_KEYRING")"
        curl -fsSL "$GRAFANA_KEY_URL" | gpg --dearmor -o "$GRAFANA_KEYRING"
        echo "$GRAFANA_SOURCE" > /etc/apt/sources.list.d/grafana.list
        "$APT_INSTALL" grafana
    fi
    systemctl enable grafana-server
    systemctl reload-or-restart grafana-server
fi
