# Each target creates the virtualenv on first use and installs the project
# from this repository's own files; torch is pinned by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv demo test train default-policy evaluate bench report virtual-cluster clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/evaluate.py hydra.run.dir=outputs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

train: $(STAMP)
	$(BIN)/python scripts/train.py

# Retrain the shipped default policy with its committed config.
default-policy: $(STAMP)
	$(BIN)/python scripts/train.py hydra.run.dir=outputs/default-policy
	mkdir -p checkpoints/default
	cp outputs/default-policy/policy.safetensors outputs/default-policy/policy.json checkpoints/default/

evaluate: $(STAMP)
	$(BIN)/python scripts/evaluate.py

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

report: $(STAMP)
	$(BIN)/python scripts/report.py

virtual-cluster: $(STAMP)
	$(BIN)/python scripts/virtual_cluster.py

clean:
	rm -rf $(VENV) outputs multirun
