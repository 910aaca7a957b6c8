# The two commands of the README.  Everything else is CMake and scripts/.
#   make test   set up this machine if needed, build, run every test label
#   make demo   run the main job on the real SmolLM2 model
#   make format apply clang-format
#   make check  the before-commit checks: clang-format, no runtime data in the tree
BUILD_DIR ?= build
DIABLO_CACHE ?= $(HOME)/.cache/diablo
export DIABLO_CACHE
export BUILD_DIR
# ccache hits across clones: hash paths relative to the checkout.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := true

.PHONY: all setup build test demo clean format check

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake --build $(BUILD_DIR)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure --timeout 1500 -j2

demo: build
	@bash scripts/demo.sh

format: setup
	@git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

# Before every commit: formatting, and nothing in the tree that belongs
# outside it (runtime data, model weights, large files).
check: setup
	@bash scripts/check_format.sh
	@bash scripts/check_tree.sh

clean:
	rm -rf $(BUILD_DIR)
