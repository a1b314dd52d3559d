#!/bin/sh
# apt-install PACKAGE...: installs the packages a server lacks, and nothing else. Every day-2
# install goes through it (delivered with each server's base files, before anything else):
# - package lists are refreshed first, whenever something is missing: a server's lists may be
#   absent (a fresh image) or months old (an adopted server), where install fails to locate a
#   package or fetches a version the archive no longer has;
# - it waits for another apt or dpkg (unattended-upgrades runs at first boot) instead of failing
#   on the lock;
# - a configuration file the delivery wrote before its package was installed stays as delivered
#   (--force-confold): dpkg would otherwise ask, and fail on the missing terminal;
# - when everything is installed already it does nothing, so a delivery run again changes
#   nothing.
set -eu
missing=""
for package in "$@"; do
    if ! dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $package"
    fi
done
test -n "$missing" || exit 0
export DEBIAN_FRONTEND=noninteractive
# A new server's first boot installs its own packages (cloud-init): let it finish first.
if command -v cloud-init >/dev/null; then
    cloud-init status --wait >/dev/null 2>&1 || true
fi
wait_for_lock="DPkg::Lock::Timeout=600"
# The lists' lock has no such timeout (apt-daily may hold it): while another apt holds it, try
# again, for up to 5 minutes; any other failure ends the install at once.
tries=0
until output=$(apt-get -o "$wait_for_lock" update -q 2>&1); do
    printf '%s\n' "$output" >&2
    tries=$((tries + 1))
    case "$output" in
        *"Could not get lock"*) [ "$tries" -lt 30 ] || exit 1 ;;
        *) exit 1 ;;
    esac
    sleep 10
done
# shellcheck disable=SC2086
apt-get -o "$wait_for_lock" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    install -y -q $missing
