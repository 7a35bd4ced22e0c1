# kdkit: `make demo` (distill on real Fashion-MNIST) and `make test`. Both create/update .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo data bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The torch installed first: pyproject.toml asks only torch>=2.4, and on this project's machines 2.13.0 is a
# local CPU build (a plain `pip install kdkit` on Linux could pull a multi-GB CUDA build). Override with
# `make TORCH=torch==X.Y install`.
TORCH ?= torch==2.13.0

# Re-installs when pyproject.toml changes. [test] holds every extra (kdkit[all]) and the test tools.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install data
	$(VENV)/bin/kdkit demo

# Fashion-MNIST for the demo, offline: Debian's dataset-fashion-mnist when we are root on Debian.
# Elsewhere kdkit looks in $$KDKIT_DATA and ~/.cache/kdkit, then downloads it (or says what to do).
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] || [ -n "$$KDKIT_DATA" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) && \
		echo "installed Fashion-MNIST (Debian package dataset-fashion-mnist)" || \
		echo "could not install dataset-fashion-mnist; kdkit will look elsewhere or download"; \
	fi

bench: install
	bash benchmarks/fashion_mnist_seeds.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
