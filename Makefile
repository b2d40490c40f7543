# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# What the lab needs on the control machine: containers, a Debian bootstrapper, SSH, iproute2,
# and the tools that build and sign the simulated Tailscale apt repository. The browser tests of
# `recordings serve` drive Debian's Chromium through its own chromedriver (nothing downloaded).
APT_PACKAGES := systemd-container debootstrap openssh-client iproute2 util-linux dpkg-dev \
	apt-utils gnupg chromium chromium-driver

.PHONY: setup demo test unit lint rootfs clean-lab lock

setup: .stamps/apt .stamps/venv .stamps/player

.stamps/apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	@mkdir -p .stamps && touch $@

# Every package comes from requirements.lock, pinned with its hashes (pip refuses any other
# file); tsops itself is then installed from this checkout, built by the locked hatchling.
.stamps/venv: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "tsops needs Python >= 3.11 ($(PYTHON) is older)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@mkdir -p .stamps && touch $@

# The web player `recordings serve` ships: asciinema-player from the npm registry, exactly as
# package-lock.json pins it (npm ci checks every integrity hash; no install scripts run). Its
# bundle, stylesheet and the licences of what the bundle holds are copied into the package's
# static directory (not tracked by git; the wheel takes them as build artifacts).
PLAYER_DIR := tsops/review/static/vendor
.stamps/player: package.json package-lock.json
	@command -v npm >/dev/null || { echo "installing: npm (the web player comes from the npm registry)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(PLAYER_DIR) && mkdir -p $(PLAYER_DIR)/licenses
	cp node_modules/asciinema-player/dist/bundle/asciinema-player.min.js \
		node_modules/asciinema-player/dist/bundle/asciinema-player.css $(PLAYER_DIR)/
	cp node_modules/asciinema-player/LICENSE $(PLAYER_DIR)/LICENSE
	for package in $$(cd node_modules && ls -d */ @*/*/ | grep -v '^@[^/]*/$$'); do \
		name=$${package%/}; \
		for file in LICENSE LICENSE.md license; do \
			if [ -f node_modules/$$name/$$file ]; then \
				cp node_modules/$$name/$$file $(PLAYER_DIR)/licenses/$${name//\//__}.txt; break; \
			fi; \
		done; \
	done
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

# Re-pin after a change to pyproject.toml's dependencies: every other pin is kept, and each
# package's hashes are written beside it. `make lock UPGRADE=1` moves everything to its newest
# release instead. The pinning tool lives in a throwaway virtualenv, not in the project.
LOCK_TOOL := pip-tools==7.6.2
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q $(LOCK_TOOL)
	printf 'pip\nhatchling>=1.25\neditables\n' | .lock-venv/bin/pip-compile -q $(if $(UPGRADE),--upgrade) \
		--generate-hashes --extra dev --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock pyproject.toml -
	rm -rf .lock-venv
