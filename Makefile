# Two entry points: `make demo` (the default comparison) and `make test`.
# Both create/update .venv and install through constraints.txt, which pins torch==2.13.0
# (the CPU build on these machines' disk); pyproject.toml keeps the loose requirement.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
OUT ?= runs/demo
EXTRAS ?= all

.PHONY: demo test install benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	@# The optional C++ grad-diff kernel (~40 s once, cached under ~/.cache/torch_extensions);
	@# without a compiler the wrapper uses its pure-torch path.
	$(BIN)/python -m hessian_lr.optim.kernel >/dev/null || echo "fused kernel not built: using the pure-torch path"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hessian-lr compare --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache
