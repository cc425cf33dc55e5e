# `make demo` runs the main job on the embedded toy-world generator (add a tree: a rule that carries over); `make test` runs the tests.
# Both create .venv first if needed (torch 2.14.1 / torchvision 0.29.1 from pip).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all bench lint clean chromium

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	WANDB_MODE=offline $(BIN)/python -m rewrite generator=toy_stylegan2 edit=toy_add_tree

# Debian's chromium for the studio's browser tests (Playwright drives it; no browser is downloaded). Installed
# when missing and run as root; otherwise those tests are skipped with a hint.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; } || echo "chromium missing (apt-get install chromium chromium-driver): the studio's browser tests will be skipped"

test: $(BIN)/.installed chromium
	WANDB_MODE=offline $(BIN)/python -m pytest -q

test-all: $(BIN)/.installed chromium
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(BIN)/.installed
	$(BIN)/python experiments/bench_strategies.py

lint: $(BIN)/.installed
	$(BIN)/ruff check rewrite tests experiments

clean:
	rm -rf outputs multirun wandb .pytest_cache
