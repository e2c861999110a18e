# The two commands of README.md: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast bench samples clean

demo: $(VENV)/.installed
	$(BIN)/fusecli inspect samples/
	$(BIN)/fusecli fuse samples/ -o out/samples --format dng,jpg --save-weights --overwrite

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The suite without the tests marked slow (over 10 s on a 2-core machine)
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

# Every benchmark of bench/README.md, each writing its figures to bench/results/, then the summary
# tables regenerated from them. Installs nothing: a comparison whose tool (enfuse, hugin-tools) or
# data (../shared) is missing is skipped with a message.
bench: $(VENV)/.installed
	$(BIN)/python bench/bench_mertens.py
	$(BIN)/python bench/bench_folder.py
	$(BIN)/python bench/bench_eval.py
	$(BIN)/python bench/bench_fuse.py --cli
	$(BIN)/python bench/bench_fuse.py --cli --dng fused
	$(BIN)/python bench/bench_fuse.py --cli --no-samples --stacks 5 --repeat 2 --align none
	$(BIN)/python bench/bench_fuse.py --stacks 1 --megapixels 50 --frames 5 --repeat 1 --no-samples --cli
	$(BIN)/python bench/bench_enfuse.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_align.py
	$(BIN)/python bench/bench_losses.py
	$(BIN)/python bench/bench_read.py
	$(BIN)/python bench/bench_grouping.py
	$(BIN)/python bench/compare_baselines.py
	$(BIN)/python bench/highlight_colour.py
	$(BIN)/python bench/real_brackets.py
	$(BIN)/python bench/look_sweep.py
	$(BIN)/python bench/bench_raw_range.py
	$(BIN)/python bench/summary.py --write

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
