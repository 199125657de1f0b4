# Two commands do everything on a fresh machine:  make demo   and   make test
# Both create (or reuse) the Python 3.12 environment first; see tools/venv.sh.
PY := .venv/bin/python

.PHONY: setup demo test test-fast test-qgis plugin lint format bench bench-accuracy clean

setup:
	@bash tools/venv.sh

demo: setup
	$(PY) -m geoseg demo --out-dir demo_output --overwrite

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-qgis

# The QGIS plugin's tests, in QGIS's own Python (Debian's QGIS; installed by tools/qgis-env.sh if missing).
test-qgis: setup
	@bash tools/qgis-env.sh
	QT_QPA_PLATFORM=offscreen .qgis-venv/bin/python -m pytest -c tests/qgis/pytest.ini tests/qgis

# The installable plugin zip: QGIS → Plugins → Manage and Install Plugins → Install from ZIP.
plugin:
	python3 tools/build_plugin_zip.py

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	.venv/bin/ruff check .

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench: setup
	$(PY) bench/loader_throughput.py

# geoseg's default recipe against a random forest on ../shared/data (about an hour on a 2-core CPU).
bench-accuracy: setup
	$(PY) -m pip install --quiet "scikit-learn>=1.4"
	$(PY) bench/accuracy.py

clean:
	rm -rf demo_output bench/out .pytest_cache .ruff_cache
