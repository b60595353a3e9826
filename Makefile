# Turnout: `make dev` runs it on this machine, `make test` tests it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint dev models bench bench-rest bench-batch bench-fanout bench-package bench-bigmodel package deploy clean

test: $(STAMP)  ## ruff, mypy and the whole suite: the one gate, the same in CI
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

dev: $(STAMP)  ## moto server + demo registry + chalice local + S3 event delivery
	$(PY) -m tools.devstack

STAGE ?= dev

package: $(STAMP)  ## build/package/$(STAGE): Terraform config, app zip, trimmed layer
	$(PY) -m tools.package --stage $(STAGE)

deploy: package  ## chalice deploy --stage $(STAGE), with the trimmed layer (< 50 MB)
	$(VENV)/bin/chalice deploy --stage $(STAGE)

models: $(STAMP)  ## rebuild the demo ONNX models in models/
	$(PY) models/build.py

bench: bench-rest bench-batch bench-fanout bench-package

bench-rest: $(STAMP)
	$(PY) -m bench.rest

bench-package: $(STAMP)  ## package size and cold start from the unzipped package
	$(PY) -m bench.package

bench-batch: $(STAMP)
	$(PY) -m bench.batch

bench-fanout: $(STAMP)  ## a file in one invocation against 1 and 2 shard workers
	$(PY) -m bench.fanout

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
