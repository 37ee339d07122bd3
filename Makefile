# The two commands of the README: `make demo` and `make test`.
# Each creates the virtualenv and installs sn_tf (editable) on first use: the demo needs the
# package alone; the tests add the `test` extra (pytest, TFDS, Apache Beam, moto).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DEMO_DIR ?= demo_out

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m sn_tf.demo --output_dir=$(DEMO_DIR)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -ra --durations=15

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
