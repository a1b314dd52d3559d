#!/bin/sh
# Install Docker (Debian 13: Docker Engine and Compose v2 from Debian's archive; Debian 12: from
# Docker's apt repository, pinned versions) and run PostHog with Docker Compose. Delivered by
# unde-infra and run after any PostHog file changed. Its parameters are in "$0.env" beside it:
# CODENAME (the system it was rendered for), DOCKER_KEY_URL (empty: Docker from Debian),
# DOCKER_KEY_FINGERPRINT, DOCKER_KEYRING,
# DOCKER_PACKAGES (package=version ...), POSTHOG_REPOSITORY, POSTHOG_COMMIT, SOURCE_DIR,
# SOURCE_PATHS, PROJECT_DIR, ENV_FILE, DATA_DIR, DATA_DIRS (path or path:uid ...), UNIT and
# METRICS_TIMER.
set -eu
# shellcheck source=/dev/null
. "$0.env"
# shellcheck source=/dev/null
running=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
if [ "$running" != "$CODENAME" ]; then
    echo "this server runs Debian $running, its files were rendered for $CODENAME: set its os in the topology" >&2
    exit 1
fi
"$APT_INSTALL" ca-certificates curl gnupg git

if [ -n "$DOCKER_KEY_URL" ]; then
    # Docker's key, trusted only with the fingerprint Docker publishes (checked on every run).
    key=$(mktemp)
    trap 'rm -f "$key"' EXIT
    curl -fsSL --retry 3 "$DOCKER_KEY_URL" -o "$key"
    fingerprint=$(gpg --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" { print $10; exit }')
    if [ "$fingerprint" != "$DOCKER_KEY_FINGERPRINT" ]; then
        echo "Docker's key has fingerprint '$fingerprint', expected $DOCKER_KEY_FINGERPRINT: not installed" >&2
        exit 1
    fi
    install -D -m 0644 "$key" "$DOCKER_KEYRING"
fi
# From Docker's repository the versions are pinned here and in /etc/apt/preferences.d, so no
# upgrade moves them; from Debian, its stable updates (security fixes) apply.
# shellcheck disable=SC2086
"$APT_INSTALL" $DOCKER_PACKAGES
systemctl enable --now docker

# PostHog's ClickHouse configuration from the commit its images were built from (what the hobby
# deployment mounts from its checkout): a sparse, shallow checkout of those paths only.
if [ "$(git -C "$SOURCE_DIR" rev-parse HEAD 2>/dev/null || true)" != "$POSTHOG_COMMIT" ]; then
    rm -rf "$SOURCE_DIR.new"
    git init -q "$SOURCE_DIR.new"
    git -C "$SOURCE_DIR.new" remote add origin "$POSTHOG_REPOSITORY"
    # shellcheck disable=SC2086
    git -C "$SOURCE_DIR.new" sparse-checkout set --no-cone $SOURCE_PATHS
    git -C "$SOURCE_DIR.new" fetch -q --depth 1 --filter=blob:none origin "$POSTHOG_COMMIT"
    git -C "$SOURCE_DIR.new" checkout -q FETCH_HEAD
    rm -rf "$SOURCE_DIR"
    mv "$SOURCE_DIR.new" "$SOURCE_DIR"
fi

# Data on the server's own disk.
for entry in $DATA_DIRS; do
    path=${entry%%:*}
    install -d -m 0750 "$DATA_DIR/$path"
    if [ "$entry" != "$path" ]; then
        chown "${entry#*:}:${entry#*:}" "$DATA_DIR/$path"
    fi
done

compose() {
    docker compose --project-directory "$PROJECT_DIR" --env-file "$ENV_FILE" "$@"
}
compose config --quiet
# Every image first: a tag that does not exist stops here, before anything running changes.
compose pull --quiet
systemctl daemon-reload
systemctl enable "$UNIT" "$METRICS_TIMER"
systemctl reload-or-restart "$UNIT"
systemctl start "$METRICS_TIMER"
