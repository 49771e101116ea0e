# Build: `make` (libraries, tools in the repo root, test binary), `make test`
# (CPU suite, then `make test-cli`: the tools' command lines on tiny inputs),
# `make test-gpu` (CUDA suite, on a machine with a GPU),
# `make CUDA=0` to skip the CUDA sources even when nvcc is present.

CXX      ?= g++
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA     ?= $(if $(NVCC),1,0)
BUILD    ?= build
OPT      ?= -O3 -march=native
# -Wno-stringop-overflow: GCC 12 reports a false positive inside fmt 9's
# format-spec parser (fmt/core.h, fill_t) for checked format strings; it names
# no line of ours (also passed to nvcc's host compiler, where it is on by default).
# -Wno-dangling-reference: GCC 13 flags every fmt::join(temporary, ...) and
# check(..., ShapeText{...}) whose temporaries live to the end of the call's
# full expression (false positives, 55 in one build; GCC 12 ignores the flag).
# -fno-math-errno: no math function sets errno (nothing here reads it), so
# that sqrt is one instruction and loops over it vectorise.
CXXFLAGS ?= $(OPT) -g -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-stringop-overflow -Wno-dangling-reference \
            -fopenmp -fno-math-errno
CPPFLAGS += -I. -MMD -MP
LDLIBS   += -lopenblas -lfmt -ljpeg -lz -lpthread -fopenmp

# glibc's vector math library (libmvec), for the CPU kernels' `omp simd`
# loops over exp, erf, log1p, ... (engine/ops/vector_math.h says why it is
# declared there). Found by a link; without it the loops call the scalar
# functions.
ifeq ($(shell echo "int main() {}" | $(CXX) -x c++ - -o /dev/null -lmvec >/dev/null 2>&1 && echo 1),1)
  CPPFLAGS += -DENGINE_LIBMVEC
  LDLIBS   += -lmvec
endif

# Libraries unpacked into a prefix (the GPU machine has no Debian packages:
# bench/device_env.sh unpacks carried .debs and sets DEPS_PREFIX).
ifdef DEPS_PREFIX
  CPPFLAGS += -I$(DEPS_PREFIX)/usr/include -I$(DEPS_PREFIX)/usr/include/x86_64-linux-gnu \
              -I$(DEPS_PREFIX)/usr/include/x86_64-linux-gnu/openblas-pthread
  DEPS_LIB := $(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu
  LDLIBS   := -L$(DEPS_LIB) -L$(DEPS_LIB)/openblas-pthread -Wl,-rpath,$(DEPS_LIB) \
              -Wl,-rpath,$(DEPS_LIB)/openblas-pthread $(LDLIBS)
endif

SRC_DIRS := engine layers models data train
CPP_SRCS := $(shell find $(SRC_DIRS) -name '*.cpp' 2>/dev/null | sort)
CU_SRCS  := $(shell find $(SRC_DIRS) -name '*.cu' 2>/dev/null | sort)
TOOLS    := $(patsubst tools/%.cpp,%,$(wildcard tools/*.cpp))
TEST_SRCS := $(shell find tests -name '*.cpp' | sort)

ifeq ($(CUDA),1)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  # Hopper (sm_90a: wgmma/TMA) plus portable PTX that any newer GPU can JIT.
  NVCC_ARCH ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=compute_80
  NVCCFLAGS ?= -O3 -g -std=c++17 $(NVCC_ARCH) -Xcompiler -fopenmp,-Wno-stringop-overflow,-Wno-dangling-reference --expt-relaxed-constexpr
  CPP_SRCS := $(filter-out engine/cuda/runtime_stub.cpp,$(CPP_SRCS))
  CPPFLAGS += -DENGINE_CUDA -I$(CUDA_HOME)/include
  LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt
  LIB_OBJS := $(CPP_SRCS:%.cpp=$(BUILD)/%.o) $(CU_SRCS:%.cu=$(BUILD)/%.cu.o)
else
  LIB_OBJS := $(CPP_SRCS:%.cpp=$(BUILD)/%.o)
endif
TEST_OBJS := $(TEST_SRCS:%.cpp=$(BUILD)/%.o)
TEST_BIN  := $(BUILD)/engine_tests

.PHONY: all test test-cli test-gpu deps install-deps clean
all: deps $(TOOLS) $(TEST_BIN)

# Each dependency checked by a header it provides, with the Debian package to install.
REQUIRED := cblas.h:libopenblas-dev fmt/format.h:libfmt-dev nlohmann/json.hpp:nlohmann-json3-dev \
            stb/stb_image.h:libstb-dev gtest/gtest.h:libgtest-dev gmock/gmock.h:libgmock-dev zlib.h:zlib1g-dev \
            jpeglib.h:libjpeg62-turbo-dev
# Libraries whose header alone proves nothing: the reference BLAS (libblas-dev)
# also provides cblas.h, but not libopenblas. Each is checked by a link.
REQUIRED_LIBS := openblas:libopenblas-dev
# Prints the Debian packages whose headers the compiler, or whose libraries the linker, cannot find.
MISSING_DEPS = for pair in $(REQUIRED); do h=$${pair%%:*}; p=$${pair\#\#*:}; \
	  echo "\#include <$$h>" | $(CXX) $(filter-out -MMD -MP,$(CPPFLAGS)) -E -x c++ - >/dev/null 2>&1 || printf ' %s' $$p; done; \
	for pair in $(REQUIRED_LIBS); do l=$${pair%%:*}; p=$${pair\#\#*:}; \
	  echo "int main() {}" | $(CXX) -x c++ - -o /dev/null $(filter -L%,$(LDLIBS)) -l$$l >/dev/null 2>&1 || printf ' %s' $$p; done

deps:
	@missing="$$($(MISSING_DEPS))"; \
	if [ -n "$$missing" ]; then echo "missing build dependencies:$$missing"; \
	  echo "install them with: make install-deps (or apt-get install -y$$missing)"; exit 1; fi

# Installs what `deps` finds missing (Debian, as root), plus the Fashion-MNIST
# package that the MLP demo and the learning test read.
install-deps:
	@missing="$$($(MISSING_DEPS))"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	command -v xz >/dev/null || missing="$$missing xz-utils"; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# Objects are linked directly (not through an archive) so that the static
# registrars in the .cu files, which nothing references by name, are kept.
$(TOOLS): %: $(BUILD)/tools/%.o $(LIB_OBJS)
	$(CXX) -o $@ $^ $(LDLIBS)

$(TEST_BIN): $(TEST_OBJS) $(LIB_OBJS)
	$(CXX) -o $@ $^ -lgtest -lgmock $(LDLIBS)

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(filter-out -MMD -MP,$(CPPFLAGS)) $(NVCCFLAGS) -MMD -c $< -o $@

# CPU suite: everything except the Cuda* tests (those need a GPU). Idle OpenMP
# and OpenBLAS threads sleep, as in the tools (engine/cli.cpp): 13 s -> 7 s on 2 cores.
SLEEPING_WORKERS = OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} OPENBLAS_THREAD_TIMEOUT=$${OPENBLAS_THREAD_TIMEOUT:-4}
# Then the tools themselves, run on tiny inputs (tests/cli/run_cli_tests.sh).
CLI_TESTS = tests/cli/run_cli_tests.sh
test: $(TEST_BIN) $(TOOLS)
	$(SLEEPING_WORKERS) $(TEST_BIN) --gtest_filter='-Cuda*:*/Cuda*' --gtest_brief=1
	$(CLI_TESTS)

test-cli: $(TOOLS)
	$(CLI_TESTS)

test-gpu: $(TEST_BIN)
	$(TEST_BIN) --gtest_filter='Cuda*:*/Cuda*'

clean:
	rm -rf $(BUILD) $(TOOLS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
