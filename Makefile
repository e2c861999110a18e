# The two commands of README.md: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench samples clean

demo: $(VENV)/.installed
	$(BIN)/fusecli inspect samples/
	$(BIN)/fusecli fuse samples/ -o out/samples --format dng,jpg --save-weights --overwrite

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# Every benchmark of bench/README.md (the real-bracket one alone takes about 8 minutes on a 2-core CPU). enfuse and hugin-tools
# (Debian) are installed first when they can be; their comparisons are skipped with a message if not.
bench: $(VENV)/.installed
	@command -v enfuse >/dev/null && command -v align_image_stack >/dev/null || \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q enfuse hugin-tools >/dev/null 2>&1 || \
	     sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q enfuse hugin-tools >/dev/null 2>&1 || \
	     echo "enfuse/hugin-tools could not be installed: their comparisons will be skipped")
	$(BIN)/python bench/bench_mertens.py
	$(BIN)/python bench/bench_folder.py
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/profile_folder.py
	$(BIN)/python bench/bench_fuse.py --cli
	$(BIN)/python bench/bench_fuse.py --stacks 1 --megapixels 50 --frames 5 --repeat 1 --no-samples --cli
	$(BIN)/python bench/bench_enfuse.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_align.py
	$(BIN)/python bench/bench_losses.py
	$(BIN)/python bench/bench_read.py
	$(BIN)/python bench/compare_baselines.py
	$(BIN)/python bench/highlight_colour.py
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/integer_frames.py
	$(BIN)/python bench/one_read.py
	$(BIN)/python bench/numba_detail.py
	$(BIN)/python bench/real_brackets.py

# Regenerates samples/ from the BSD-3 Cannon.exr in ../shared and procedural scenes (README, "Samples").
samples: $(VENV)/.installed
	rm -rf samples.new && $(BIN)/fusecli synth ../shared/data/real/hdr_radiance_openexr_cannon/Cannon.exr \
	    --stacks 2 --procedural 1 --size 512x384 --seed 7 -o samples.new \
	    && cp samples/README.md samples/COPYING-Cannon.exr.txt samples.new/ && rm -rf samples && mv samples.new samples

# torch==2.13.0 first: on our machines that is the CPU build on disk (no multi-GB CUDA download);
# everything after it then finds torch already satisfied.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
