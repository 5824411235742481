# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv (if missing), installs bridgeseg with its test extras into it, and runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bridgeseg-installed

.PHONY: demo test test-slow benchmarks clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bridgeseg demo --out demo-output
	@echo "open demo-output/report.html in a browser: every validation image, worst first"

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# the official Cityscapes evaluators, for the cross-checks (--no-deps: its metadata pulls the
# obsolete `typing` backport; the evaluators themselves need only pyquaternion besides our deps),
# and selenium for the report's browser test (Chromium itself: apt-get install chromium chromium-driver;
# the browser test skips without it)
test-slow: $(STAMP)
	$(BIN)/python -m pip install --no-deps 'cityscapesscripts>=2.2' pyquaternion
	$(BIN)/python -m pip install 'selenium>=4.10'
	$(BIN)/python -m pytest -m slow

benchmarks: $(STAMP)
	cd benchmarks && for script in bootstrap_overhead fcrn_vs_deeplabv3 grouping_speed \
	    instances_vs_connected_components multiview_cost sliding_window output_stride_ceiling optimizer_step; do \
	  echo "=== $$script"; ../$(BIN)/python $$script.py || exit 1; done

clean:
	rm -rf $(VENV) demo-output src/*.egg-info
