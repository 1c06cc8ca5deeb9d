# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv with Python 3.10 when it is missing or stale and install the
# locked dependency set; a second run skips the install (stamp file).

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# uv installs the lock (the same pins as pip would) with parallel downloads: 83 s against
# pip's 991 s on a cold cache on a busy 2-core machine (BENCHMARKS.md "Install", bench/install.py).
# --compile-bytecode writes the .pyc files at install, as pip does and uv by default does not:
# without them (and with PYTHONDONTWRITEBYTECODE=1, as on CI machines) every Python process
# compiles TensorFlow, TFX and Beam again on import (`import tfx.v1`: 54 s CPU against 19 s).
UV := uv==0.13.8
export TF_USE_LEGACY_KERAS := 0
# Library log levels and warning filters are set by `import pix2seq` (pix2seq/console.py);
# `make demo VERBOSE=1` (PIX2SEQ_LOG=debug) shows every library line.
ifdef VERBOSE
export PIX2SEQ_LOG := debug
endif

.PHONY: test test-fast venv demo bench clean-venv pretrain-demo

venv: $(STAMP)

# Python 3.10: a working python3.10, else pyenv's 3.10.
$(PY):
	@PYBIN=""; \
	if python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then PYBIN=python3.10; \
	elif PYENV_VERSION=3.10.13 python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then PYBIN="env PYENV_VERSION=3.10.13 python3.10"; \
	elif command -v pyenv >/dev/null 2>&1 && P=$$(pyenv prefix $$(pyenv versions --bare | grep '^3\.10' | tail -1) 2>/dev/null) && [ -x "$$P/bin/python3.10" ]; then PYBIN="$$P/bin/python3.10"; \
	else echo "error: Python 3.10 is required (TFX 1.16 supports 3.9-3.10). Install it, e.g. 'pyenv install 3.10.13' or 'apt-get install python3.10-venv', then rerun." >&2; exit 1; fi; \
	echo "creating $(VENV) with $$PYBIN"; \
	rm -rf $(VENV); $$PYBIN -m venv $(VENV)

$(STAMP): $(PY) requirements.lock setup.py
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null || { echo "$(VENV) is stale (not Python 3.10): recreating"; rm -rf $(VENV); $(MAKE) --no-print-directory $(PY); }
	$(PY) -m pip install -q --upgrade pip wheel "setuptools<76" $(UV)
	$(PY) -m uv pip install -q --compile-bytecode --python $(PY) -r requirements.lock
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25 tests

# The fast lane while changing code (a few minutes): `make test` without the tests marked slow
# (over ~5 s alone, or using a module fixture that trains or exports; pytest.ini registers the
# marker) and without the end-to-end pipeline test. `make test` stays the full run.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" --ignore=tests/test_pipeline_e2e.py tests

clean-venv:
	rm -rf $(VENV)

# The main job: synthetic COCO-format data (made once) -> the whole TFX pipeline with the
# `demo` preset (ingest, statistics, schema, validation, training, COCO evaluation with
# blessing, push) -> a table of metrics, blessing, pushed model and time per component.
# Prediction pictures are copied to demo_output/.
# The `demo` preset fine-tunes the pretrained checkpoint in pretrained/demo_tiny;
# `make demo SCRATCH=1` trains the same model from random weights (`demo-scratch`).
DEMO_DATA := demo_data/synth
DEMO_TRAIN := 400
DEMO_VAL := 50
DEMO_PRESET := $(if $(SCRATCH),demo-scratch,demo)

demo: $(STAMP)
	@test -f $(DEMO_DATA)/annotations/instances_val.json || \
		$(VENV)/bin/pix2seq synth $(DEMO_DATA) --train $(DEMO_TRAIN) --val $(DEMO_VAL) --seed 1
	$(VENV)/bin/pix2seq pipeline run --preset $(DEMO_PRESET) --coco-dir $(DEMO_DATA)

# Remakes pretrained/demo_tiny (what `make demo` starts from) from synthetic data with
# another seed than the demo's: about an hour on 2 idle CPU cores (1.65 steps/s), at the
# lowest priority; resumes from runs/pretrain_demo when stopped. PRETRAIN_STEPS=... sets
# the length; PRETRAIN_FROM=pretrained/demo_tiny continues from a checkpoint (a warm start,
# new schedule: how the shipped one was made, 600 + 5,500 steps; its pretraining.json).
PRETRAIN_STEPS := 6000
PRETRAIN_FROM :=
pretrain-demo: $(STAMP)
	nice -n 19 $(PY) bench/pretrain_demo.py --steps $(PRETRAIN_STEPS) $(if $(PRETRAIN_FROM),--continue-from $(PRETRAIN_FROM))
