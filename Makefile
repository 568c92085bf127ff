# Each target creates the virtualenv on first use and installs the project
# from this repository's own files; torch is pinned by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv demo test train default-policy multi-policy evaluate bench report virtual-cluster clean

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
# Train the shipped policy, evaluate it with the held-out protocol and store
# that evaluation's summary in its metadata.
default-policy: $(STAMP)
	$(BIN)/python scripts/train.py hydra.run.dir=outputs/default-policy
	mkdir -p checkpoints/default
	cp outputs/default-policy/policy.safetensors outputs/default-policy/policy.json checkpoints/default/
	$(BIN)/python scripts/evaluate.py eval=heldout record_in_checkpoint=true \
	    checkpoint=checkpoints/default/policy.json hydra.run.dir=outputs/default-policy/heldout

# The same for four models sharing the mixed cluster (conf/workload/multi.yaml).
multi-policy: $(STAMP)
	$(BIN)/python scripts/train.py cluster=mixed workload=multi algo.total_timesteps=600000 \
	    hydra.run.dir=outputs/multi-policy
	mkdir -p checkpoints/multi
	cp outputs/multi-policy/policy.safetensors outputs/multi-policy/policy.json checkpoints/multi/
	$(BIN)/python scripts/evaluate.py cluster=mixed workload=multi record_in_checkpoint=true \
	    'eval.controllers=[policy,hpa,hpa_best_static]' checkpoint=checkpoints/multi/policy.json \
	    hydra.run.dir=outputs/multi-policy/evaluation

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
