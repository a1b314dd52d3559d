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
	wireguard-tools wireguard-go nftables iproute2 iputils-ping procps nginx-light
PYTEST_ARGS ?=
TEST_PARTS := unit artifacts integration

.PHONY: preview test lint deb-packages benchmark clean

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

# The three parts run one after the other, each timed (wall, and the user and system CPU seconds
# of pytest and what it starts), with a summary at the end; any failed part fails the target.
# Exit status 5 (nothing collected, e.g. a PYTEST_ARGS filter that matches no test of a part) is
# no failure.
test: $(STAMP) deb-packages lint
	@exec 3>&1 4>&2; status=0; summary=""; \
	for part in $(TEST_PARTS); do \
		echo "=== tests/$$part"; \
		took=$$( { TIMEFORMAT='%R s wall, %U s user + %S s sys CPU'; \
			time $(PY) -m pytest tests/$$part $(PYTEST_ARGS) 1>&3 2>&4; } 2>&1 ); rc=$$?; \
		case $$rc in 0) result=passed;; 5) result="no tests selected";; *) result="FAILED (exit $$rc)"; status=1;; esac; \
		echo "=== tests/$$part: $$result in $$took"; \
		summary="$$summary  tests/$$part: $$result in $$took\n"; \
	done; \
	printf "=== test summary\n$$summary"; exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy unde_infra components policies

benchmark: $(STAMP)
	$(PY) benchmarks/preview_scale.py

clean:
	rm -rf build .pytest_cache
