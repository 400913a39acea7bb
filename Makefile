# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv, install requirements.txt and build msg/ once; later runs skip what is done.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# Keep DDS on this machine: own domain id, loopback-only Fast DDS profile.
export ROS_DOMAIN_ID ?= 42
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml

.PHONY: setup demo test clean
setup: $(VENV)/.msgs-built

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	touch $@

$(VENV)/.msgs-built: $(VENV)/.installed $(wildcard msg/*.msg srv/*.srv) CMakeLists.txt package.xml sfs_ros/__init__.py
	tools/build_msgs.sh $(VENV)
	touch $@

# The main job on built-in sample photos: FastSAM-s + CLIP ViT-B-32, COCO vocabulary.
# Without weights on disk it says so and runs the same pipeline with random weights.
# Then a few frames of the known-answer shapes world, named by the small models trained on it
# (models/shapes/): right labels on the first run, out/demo_shapes/overlays/.
demo: setup
	$(PY) tools/sample_images.py out/samples
	$(VENV)/bin/sfs segment out/samples --vocab coco --max-det 40 --no-tracking --out out/demo --allow-random-weights
	$(PY) -m sfs_ros.synth.shapes folder --frames 4 --seed 7 --out out/shapes
	$(VENV)/bin/sfs segment out/shapes/images --out out/demo_shapes $$($(PY) -m sfs_ros.synth.known_answer crop)

test: setup
	$(PY) -m pytest -q test

clean:
	rm -rf build build.log out
