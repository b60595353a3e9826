# Turnout: `make dev` runs it on this machine, `make test` tests it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast lint dev models bench bench-rest bench-batch bench-fanout bench-package bench-bigmodel bench-report package deploy clean demo-traffic

# The one gate, the same in CI. pytest prints each test file as it starts and a
# running count; the 15 slowest tests are listed at the end.
test: $(STAMP)  ## ruff, mypy and the whole suite (about 9 minutes on 2 cores)
	@echo "make test: ruff, mypy, then about 1,400 tests: about 9 minutes on 2 cores"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@echo "mypy, strict: about 30 s on a cold cache, seconds once .mypy_cache is warm"
	$(VENV)/bin/mypy
	@echo "pytest: about 20 s to import and collect, then one line per test file"
	$(VENV)/bin/pytest --durations=15

# The edit loop, about 3 minutes on 2 cores: no servers, no child processes, no
# package build (tests/e2e, tests/deploy and the hostile batch suite are left to
# make test).
test-fast: $(STAMP)  ## ruff and the tests without servers (about 3 minutes)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "not e2e" --ignore=tests/deploy

dev: $(STAMP)  ## moto server, demo registry, chalice local, the Lambda emulation; writes .dev.env
	$(PY) -m tools.devstack

STAGE ?= dev

package: $(STAMP)  ## build/package/$(STAGE): Terraform config, app zip, trimmed layer
	$(PY) -m tools.package --stage $(STAGE)

deploy: package  ## chalice deploy --stage $(STAGE), with the trimmed layer (< 50 MB)
	$(VENV)/bin/chalice deploy --stage $(STAGE)

models: $(STAMP)  ## rebuild the demo ONNX models in models/
	$(PY) -m models.build

bench: bench-rest bench-batch bench-fanout bench-package bench-report

bench-rest: $(STAMP)
	$(PY) -m bench.rest

bench-package: $(STAMP)  ## package size and cold start from the unzipped package
	$(PY) -m bench.package

bench-batch: $(STAMP)
	$(PY) -m bench.batch

bench-fanout: $(STAMP)  ## a file in one invocation against 1 and 2 shard workers
	$(PY) -m bench.fanout

bench-report: $(STAMP)  ## turnout report over 1M requests and 500k labels; a day from summaries
	$(PY) -m bench.report

demo-traffic: $(STAMP)  ## with make dev running: iris traffic and labels, then turnout report iris
	$(PY) -m tools.demo_traffic

# Not in `make bench`: it writes 3.5 GiB of models and needs about 4 GiB of memory.
bench-bigmodel: $(STAMP)  ## a 1 GiB and a 2.5 GiB model: first request, peak memory
	$(PY) -m bench.bigmodel

# The venv is rebuilt when it was made by an interpreter older than 3.12.
$(PY):
	@python=$$(tools/find-python) || exit 1; \
	echo "creating $(VENV) with $$python"; \
	"$$python" -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' || \
	  { echo "$(VENV) runs Python < 3.12: recreating it"; rm -rf $(VENV); $(MAKE) $(PY); }
	@echo "installing Turnout's dependencies into $(VENV) (the first time: about 2 minutes," \
	  "mostly onnxruntime, numpy, scikit-learn and moto; later runs skip this)"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	@echo "$(VENV) is ready"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
