# colliderflow — the two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_LINK_MODE ?= copy
# Installs compile every module to bytecode once (36 s): where PYTHONDONTWRITEBYTECODE is set, as on
# these machines, Python otherwise recompiles what it imports at every start (import tensorflow
# 11.5 s -> 4.6 s, an `airflow` CLI call 4.0 s -> 1.5 s; a later sync only checks, about 2 s).
export UV_COMPILE_BYTECODE ?= 1
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export DEMO_DIR ?= $(CURDIR)/out/demo

.PHONY: demo test install install-test install-bench airflow lint bench images clean

$(UV):
	python3 -m pip install --user --quiet "uv==$(UV_VERSION)"

# --inexact: what `make install-test` or `make install-bench` added (pytest, moto, ROOT) stays
install: $(UV)
	$(UV) sync --locked --all-extras --no-default-groups --inexact

install-test: $(UV)
	$(UV) sync --locked --all-extras

# the test group (moto for the cluster comparison) plus the `peers` group (ROOT's RDataFrame, psutil)
install-bench: $(UV)
	$(UV) sync --locked --all-extras --group peers

demo: install
	$(UV) run --no-sync python -m colliderflow.demo --output "$(DEMO_DIR)"

test: install-test
	bash tests/services/install.sh
	$(UV) run --no-sync ruff check jobs plugins dags tests bench
	$(UV) run --no-sync pytest $(PYTEST_ARGS)

airflow: install
	$(UV) run --no-sync python -m colliderflow.standalone

lint: install-test
	$(UV) run --no-sync ruff check jobs plugins dags tests bench
	$(UV) run --no-sync ruff format --check jobs plugins dags tests bench

# BENCH_ARGS=--quick: small inputs (a minute or two per benchmark); results in out/bench/*.json
bench: install-bench
	$(UV) run --no-sync python -m bench.dimuon $(BENCH_ARGS)
	$(UV) run --no-sync python -m bench.ingest $(BENCH_ARGS)
	$(UV) run --no-sync python -m bench.prepare $(BENCH_ARGS)
	$(UV) run --no-sync python -m bench.train $(BENCH_ARGS)
	$(UV) run --no-sync python -m bench.cluster $(BENCH_ARGS)
	$(UV) run --no-sync python -m bench.partitions $(BENCH_ARGS)
	$(UV) run --no-sync python -m bench.table

# Build images/*/Dockerfile with buildah on stand-in bases made with mmdebstrap, then run stages inside
# them (tests/images/); sizes and build times in out/images/images.json. Needs root (buildah, chroot).
images: install-test
	bash tests/services/image-tools.sh
	$(UV) run --no-sync pytest -m images tests/images $(PYTEST_ARGS)

clean:
	rm -rf .airflow out .pytest_cache
