# Two commands do all set-up on a fresh clone:
#   make preview   creates .venv, installs, previews both stacks offline
#   make test      installs what the tests need (Debian packages too, when run as root) and runs them all
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
# The real tools the tests run the rendered configs through, and the servers they start.
DEB_PACKAGES := cloud-init prometheus prometheus-alertmanager prometheus-node-exporter \
	etcd-server etcd-client python3-venv postgresql-15 pgbouncer pgbackrest redis-server \
	wireguard-tools wireguard-go nftables iproute2 mmdebstrap systemd-container openssh-client iputils-ping procps nginx-light shellcheck \
	prometheus-redis-exporter docker-compose caddy graphviz librsvg2-bin git systemd certbot pebble
PYTEST_ARGS ?=
# Bytecode is written even where the environment sets PYTHONDONTWRITEBYTECODE: the tests start
# some thirty interpreters (the workers, previews as processes, the servers' scripts), each of
# which would compile the project again, pytest would rewrite every test module in each worker
# (about 2.4 s a worker), and the benchmark would time the compiling.
export PYTHONDONTWRITEBYTECODE :=
TEST_PARTS := unit artifacts fuzz integration converge
# The unit part runs on every CPU (pytest-xdist), a group of tests to a worker: a test file, so that its
# module-scoped runs happen once, or the files that share a session run (tests/conftest.py).
UNIT_PYTEST_ARGS := -n auto --dist loadgroup

.PHONY: preview test lint deb-packages benchmark clean converge drills docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

preview: $(STAMP)
	$(VENV)/bin/unde-infra preview --stack all

deb-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "Debian packages: all present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "missing Debian packages (run make test as root to install them):" $$missing; exit 1; fi

# The parts run one after the other, each timed (wall, and the user and system CPU seconds
# of pytest and what it starts) with its ten slowest tests, and a summary at the end; any
# failed part fails the target.
# Exit status 5 (no test collected) fails too: a part that ran nothing checked nothing.
test: $(STAMP) deb-packages lint
	@exec 3>&1 4>&2; status=0; summary=""; \
	for part in $(TEST_PARTS); do \
		echo "=== tests/$$part"; \
		took=$$( { TIMEFORMAT='%R s wall, %U s user + %S s sys CPU'; \
			time $(PY) -m pytest tests/$$part --durations=10 $$( [ $$part = unit ] && echo "$(UNIT_PYTEST_ARGS)" ) $(PYTEST_ARGS) 1>&3 2>&4; } 2>&1 ); rc=$$?; \
		case $$rc in 0) result=passed;; 5) result="FAILED: no tests ran"; status=1;; *) result="FAILED (exit $$rc)"; status=1;; esac; \
		echo "=== tests/$$part: $$result in $$took"; \
		summary="$$summary  tests/$$part: $$result in $$took\n"; \
	done; \
	printf "=== test summary\n$$summary"; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy unde_infra components policies
	$(VENV)/bin/mypy lab
	shellcheck --shell=sh --severity=style unde_infra/files/*.sh

# The generated documentation: docs/reference/ and the diagrams and timelines of the pages, from
# the code (unde_infra/reference.py); then the sample outputs of README.md and docs/, produced
# again by the commands they show. tests/unit fails while either is stale.
docs: $(STAMP)
	$(PY) -m unde_infra.reference --write
	$(PY) -m tests.readme_samples --write

# The converge lab (lab/, docs/testing.md "The converge lab"): every server of the default
# topology built for real in systemd containers and checked; the last line is its summary.
converge: $(STAMP) deb-packages
	$(PY) -m lab

# The lab built as `converge` builds it, then the drills at 120 ms (lab/drills.py,
# lab/failover_drills.py); the last line: how many failure drills agree with `unde-infra scenarios`.
drills: $(STAMP) deb-packages
	$(PY) -m lab --drills

benchmark: $(STAMP)
	$(PY) benchmarks/preview_scale.py

clean:
	rm -rf build .pytest_cache

# --- The merge-request workflow (.gitlab-ci.yml runs these targets; see docs/merge-requests.md) ---
# Where the merge request's previews, diff and diagram go (kept as job artifacts).
MR_DIR ?= build/mr
# The merge request's merge base (CI_MERGE_REQUEST_DIFF_BASE_SHA in a pipeline).
MR_BASE_SHA ?=
# The Pulumi stack a credentialed job works on (helsinki or local).
STACK ?=
PULUMI_DIR ?= build/pulumi-cli
PULUMI := $(PULUMI_DIR)/pulumi/pulumi

.PHONY: mr-preview mr-diff mr-note diagram cost pulumi-cli pulumi-login real-run-check pulumi-preview pulumi-up

# The offline preview (with the policies) at the merge request's head and at its merge base. The
# base is checked out in a worktree of its own and previewed with its own program and config
# (the head's installed dependencies). A mandatory violation at the head fails the target, after
# both previews are written, so the diff still runs.
mr-preview: $(STAMP)
	@test -n "$(MR_BASE_SHA)" || { echo "MR_BASE_SHA: give the merge base commit (CI_MERGE_REQUEST_DIFF_BASE_SHA)"; exit 2; }
	rm -rf $(MR_DIR) && git worktree prune && mkdir -p $(MR_DIR)
	git worktree add --detach $(MR_DIR)/base-src $(MR_BASE_SHA)
	cd $(MR_DIR)/base-src && $(abspath $(PY)) -m unde_infra preview --stack all --out $(abspath $(MR_DIR))/base
	git worktree remove --force $(MR_DIR)/base-src
	$(VENV)/bin/unde-infra preview --stack all --out $(MR_DIR)/head

# The diff of the two previews as text (the job log), Markdown (the merge-request note) and JSON,
# then the note. Exit code: the diff's (3 when a protected, stateful or adopted resource would be
# replaced), after the reports are written and the note is posted.
mr-diff: $(STAMP)
	@status=0; \
	$(VENV)/bin/unde-infra diff $(MR_DIR)/base $(MR_DIR)/head --format markdown > $(MR_DIR)/diff.md || status=$$?; \
	$(VENV)/bin/unde-infra diff $(MR_DIR)/base $(MR_DIR)/head --format json > $(MR_DIR)/diff.json || true; \
	$(VENV)/bin/unde-infra diff $(MR_DIR)/base $(MR_DIR)/head --format text | tee $(MR_DIR)/diff.txt || true; \
	$(POST_NOTE) || { [ $$status != 0 ] || status=1; }; \
	exit $$status

# Posts $(MR_DIR)/diff.md as a merge-request note when UNDE_MR_NOTE_TOKEN is set (a project access
# token with the api scope: CI_JOB_TOKEN cannot write notes). The token never reaches the log.
POST_NOTE = if [ -z "$$UNDE_MR_NOTE_TOKEN" ]; then echo "UNDE_MR_NOTE_TOKEN is not set: the diff report is kept as an artifact only"; \
	elif [ -z "$$CI_API_V4_URL" ] || [ -z "$$CI_PROJECT_ID" ] || [ -z "$$CI_MERGE_REQUEST_IID" ]; then \
		echo "mr-note: runs in a merge-request pipeline (CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID)"; false; \
	else curl --silent --show-error --fail-with-body --output /dev/null --request POST \
		--header "PRIVATE-TOKEN: $$UNDE_MR_NOTE_TOKEN" --data-urlencode "body@$(MR_DIR)/diff.md" \
		"$$CI_API_V4_URL/projects/$$CI_PROJECT_ID/merge_requests/$$CI_MERGE_REQUEST_IID/notes" \
		&& echo "posted $(MR_DIR)/diff.md as a note on merge request !$$CI_MERGE_REQUEST_IID"; fi

mr-note:
	@$(POST_NOTE)

diagram: $(STAMP)
	$(VENV)/bin/unde-infra diagram --out $(MR_DIR)/diagram

cost: $(STAMP)
	$(VENV)/bin/unde-infra cost --format markdown

# The pinned Pulumi CLI (PULUMI_VERSION, PULUMI_SHA256: .gitlab-ci.yml's variables), checked
# against the pinned checksum and against the checksums file of the same GitHub release.
pulumi-cli:
	@test -n "$(PULUMI_VERSION)" -a -n "$(PULUMI_SHA256)" || { echo "pulumi-cli: set PULUMI_VERSION and PULUMI_SHA256"; exit 2; }
	rm -rf $(PULUMI_DIR) && mkdir -p $(PULUMI_DIR)
	cd $(PULUMI_DIR) && release=https://github.com/pulumi/pulumi/releases/download/v$(PULUMI_VERSION) \
		&& tarball=pulumi-v$(PULUMI_VERSION)-linux-x64.tar.gz \
		&& curl --silent --show-error --fail --location --remote-name "$$release/$$tarball" \
		&& curl --silent --show-error --fail --location --remote-name "$$release/pulumi-$(PULUMI_VERSION)-checksums.txt" \
		&& echo "$(PULUMI_SHA256)  $$tarball" | sha256sum --check --strict \
		&& grep -qx "$(PULUMI_SHA256)  $$tarball" pulumi-$(PULUMI_VERSION)-checksums.txt \
		&& tar -xzf "$$tarball"
	$(PULUMI) version

# The self-managed state backend (docs/architecture.md, "State backend"): PULUMI_BACKEND_URL, the object
# storage keys as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, PULUMI_CONFIG_PASSPHRASE.
pulumi-login: pulumi-cli
	@test -n "$$PULUMI_BACKEND_URL" || { echo "pulumi-login: set PULUMI_BACKEND_URL"; exit 2; }
	$(PULUMI) login "$$PULUMI_BACKEND_URL"

# Before the CLI is even fetched: everything a real run of STACK needs (import ids, the real admin
# keys and networks, the chats and zones, what running servers serve, the secrets being set).
# The program checks the same again, and the secrets' shapes, when the CLI runs it.
real-run-check: $(STAMP)
	@case "$(STACK)" in helsinki|local) ;; *) echo "set STACK (helsinki or local)"; exit 2;; esac
	$(VENV)/bin/unde-infra validate --real-run --stack $(STACK)

pulumi-preview: $(STAMP) real-run-check pulumi-login
	$(PULUMI) preview --stack $(STACK) --policy-pack policies --diff --non-interactive

pulumi-up: $(STAMP) real-run-check pulumi-login
	$(PULUMI) up --stack $(STACK) --policy-pack policies --yes --non-interactive
