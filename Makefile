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

# `make test-floors`: a second venv with the lowest version of every dependency pyproject.toml
# declares (.ci/floors.txt; torch stays at constraints.txt's 2.13.0), running the tests that
# exercise them. .ci/run runs it after `make test`. (tests/test_stats.py is not among them: stats.py
# no longer imports scipy, and its tests pin it against the installed scipy's own rules.)
FLOORS_VENV ?= $(VENV)/floors
FLOORS_BIN := $(FLOORS_VENV)/bin
FLOORS_PIP := $(FLOORS_BIN)/python -m pip
FLOORS_STAMP := $(FLOORS_VENV)/.installed
FLOORS_TESTS ?= tests/tuning/test_study.py tests/tuning/test_optuna_api.py tests/tuning/test_journal.py \
	tests/tuning/test_space.py tests/tuning/test_postgres.py::test_three_workers_share_one_study_with_exactly_n_trials \
	tests/test_resume.py::test_a_two_hyperparameter_space_resumes_bit_identically tests/pipeline/test_compare.py \
	tests/test_cli.py::test_tiny_compare_through_the_console_script tests/test_cli.py::test_bad_config_file \
	tests/test_config.py tests/report tests/arms/test_every_arm.py tests/workloads/test_digits.py

.PHONY: demo test test-floors install benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	@# The optional C++ grad-diff kernel (~40 s once, cached under ~/.cache/torch_extensions);
	@# without a compiler the wrapper uses its pure-torch path.
	$(BIN)/python -m hessian_lr.optim.kernel >/dev/null || echo "fused kernel not built: using the pure-torch path"
	touch $@

$(FLOORS_BIN)/python:
	$(PYTHON) -m venv $(FLOORS_VENV)

$(FLOORS_STAMP): pyproject.toml constraints.txt .ci/floors.txt | $(FLOORS_BIN)/python
	$(BIN)/python .ci/check_floors.py
	$(FLOORS_PIP) install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(FLOORS_PIP) install --quiet --disable-pip-version-check -c constraints.txt -r .ci/floors.txt
	$(FLOORS_PIP) install --quiet --disable-pip-version-check --no-deps -e .
	$(FLOORS_PIP) check
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hessian-lr compare --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-floors: $(STAMP) $(FLOORS_STAMP)
	$(FLOORS_BIN)/python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning $(FLOORS_TESTS) $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/batched_training.py
	$(BIN)/python benchmarks/batched_training.py --workload mnist1d-cnn --arms adam,hessian-adam,adabelief
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache
