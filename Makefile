# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# What the lab needs on the control machine: containers, a Debian bootstrapper, SSH, iproute2,
# and the tools that build and sign the simulated Tailscale apt repository.
APT_PACKAGES := systemd-container debootstrap openssh-client iproute2 util-linux dpkg-dev \
	apt-utils gnupg

.PHONY: setup demo test unit lint rootfs clean-lab constraints

setup: .stamps/apt .stamps/venv

.stamps/apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@mkdir -p .stamps && touch $@

.stamps/venv: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "tsops needs Python >= 3.11 ($(PYTHON) is older)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@mkdir -p .stamps && touch $@

# The Debian rootfs the lab boots, cached outside the repository (/var/cache/tsops-lab).
rootfs: setup
	$(PY) -m tests.lab.rootfs

demo: rootfs
	$(PY) -m tests.lab.demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -m 'not lab' -q -n auto

test: rootfs lint
	$(VENV)/bin/pytest

# Remove what labs of dead processes left behind (the lab also does this on every start).
clean-lab: setup
	$(PY) -c 'from tests.lab.journal import reap_stale; print(reap_stale(), "reaped")'

# Re-pin every Python package (after a change to pyproject.toml's dependencies), from a fresh
# virtualenv so that nothing stale is kept.
constraints:
	rm -rf .constraints-venv && $(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/pip install -q --upgrade pip && .constraints-venv/bin/pip install -q -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; .constraints-venv/bin/pip freeze --all --exclude-editable \
		| grep -v '^setuptools=='; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .constraints-venv
