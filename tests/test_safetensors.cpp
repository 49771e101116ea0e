#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>

#include "engine/ops/view/view.h"
#include "engine/random.h"
#include "engine/safetensors.h"
#include "tests/expect_error.h"
#include "tests/scoped_limit.h"

namespace engine {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::error_of;

// ../shared from the repo root (CI), or ENGINE_SHARED_DIR (worktrees).
std::string shared_dir() {
  const char* env = std::getenv("ENGINE_SHARED_DIR");
  return env && *env ? env : "../shared";
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A safetensors file written by hand: length prefix (`header_length`
// overrides the real one), header text, then the data bytes.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               uint64_t header_length = UINT64_MAX) {
  if (header_length == UINT64_MAX) header_length = header.size();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header_length >> (8 * i));
  write_bytes(path, bytes + header + data);
}

std::string open_error(const std::string& path) {
  return error_of([&] { SafetensorsFile::open(path); });
}

// Bit-exact equality of two tensors' dtype, shape and bytes.
void expect_same_bits(const Tensor& actual, const Tensor& expected) {
  ASSERT_EQ(actual.dtype(), expected.dtype());
  ASSERT_EQ(actual.shape(), expected.shape());
  Tensor a = actual.contiguous();
  Tensor e = expected.contiguous();
  EXPECT_EQ(std::memcmp(a.raw_data(), e.raw_data(), e.nbytes()), 0) << expected.describe();
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("safetensors_test_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Random non-zero values of every dtype.
NamedTensors every_dtype() {
  Rng rng(7);
  NamedTensors tensors;
  for (DType dtype : {DType::F64, DType::F32, DType::F16, DType::BF16}) {
    tensors.emplace_back(safetensors_dtype_name(dtype), Tensor::randn({3, 5}, rng, dtype));
  }
  for (DType dtype : {DType::I64, DType::I32, DType::U8}) {
    tensors.emplace_back(safetensors_dtype_name(dtype), Tensor::uniform({4, 2}, rng, 1, 200, dtype));
  }
  return tensors;
}

TEST_F(SafetensorsTest, RoundTripEveryDtypeWithMetadata) {
  NamedTensors tensors = every_dtype();
  tensors.emplace_back("scalar", Tensor::full({}, 2.5));
  tensors.emplace_back("empty", Tensor::zeros({0, 3}, DType::F16));
  Metadata metadata{{"format", "pt"}, {"note", "round trip"}};
  save_safetensors(file("all.safetensors"), tensors, metadata);

  SafetensorsFile loaded = SafetensorsFile::open(file("all.safetensors"));
  EXPECT_EQ(loaded.metadata(), metadata);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    names.push_back(name);
    if (tensor.numel() > 0) {
      std::vector<double> values = tensor.to(DType::F64).to_doubles();
      EXPECT_EQ(std::count(values.begin(), values.end(), 0.0), 0) << name;
    }
    ASSERT_TRUE(loaded.contains(name));
    expect_same_bits(loaded.get(name), tensor);
  }
  EXPECT_EQ(loaded.names(), names);  // saved in order, so offset order is the same
  EXPECT_EQ(loaded.get("scalar").dim(), 0);
  EXPECT_EQ(loaded.get("empty").numel(), 0);
}

TEST_F(SafetensorsTest, HeaderIsPaddedAndDataAligned) {
  save_safetensors(file("a.safetensors"), {{"x", Tensor::ones({3})}});
  std::string bytes = read_bytes(file("a.safetensors"));
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);  // little-endian host
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_length + 12);
}

TEST_F(SafetensorsTest, SavesNonContiguousViews) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor xt = transpose(x, 0, 1);
  ASSERT_FALSE(xt.is_contiguous());
  save_safetensors(file("t.safetensors"), {{"xt", xt}});
  Tensor loaded = SafetensorsFile::open(file("t.safetensors")).get("xt");
  EXPECT_EQ(loaded.shape(), (Shape{3, 2}));
  EXPECT_EQ(loaded.to_floats(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST_F(SafetensorsTest, ViewsOutliveTheFileObject) {
  save_safetensors(file("a.safetensors"), {{"x", Tensor::full({4}, 3.0)}});
  Tensor x;
  {
    SafetensorsFile opened = SafetensorsFile::open(file("a.safetensors"));
    x = opened.get("x");
  }
  EXPECT_EQ(x.to_floats(), std::vector<float>(4, 3.0f));
  EXPECT_EQ(x.device(), Device::cpu());
}

TEST_F(SafetensorsTest, MisalignedDataIsCopiedNotMisread) {
  // Header of odd length, so the F32 data starts at an odd address.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header += std::string(header.size() % 2 == 0 ? 1 : 0, ' ');
  float values[2] = {1.5f, -2.0f};
  write_raw(file("odd.safetensors"), header, std::string(reinterpret_cast<char*>(values), 8));
  Tensor x = SafetensorsFile::open(file("odd.safetensors")).get("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw_data()) % 4, 0u);
  EXPECT_EQ(x.to_floats(), (std::vector<float>{1.5f, -2.0f}));
}

// ---------------------------------------------------------------- real files

TEST(SafetensorsReal, TimmFixture) {
  std::string path = shared_dir() + "/fixtures/timm_vit_tiny.safetensors";
  ASSERT_TRUE(fs::exists(path)) << path << " missing; set ENGINE_SHARED_DIR";
  SafetensorsFile opened = SafetensorsFile::open(path);
  EXPECT_FALSE(opened.metadata().empty());
  Tensor cls = opened.get("cls_token");
  EXPECT_EQ(cls.shape(), (Shape{1, 1, 64}));
  EXPECT_EQ(cls.dtype(), DType::F32);
  Checkpoint checkpoint = load_checkpoint(path);
  EXPECT_EQ(checkpoint.tensors.size(), opened.names().size());
  EXPECT_EQ(checkpoint.metadata, opened.metadata());
}

int64_t total_numel(const Checkpoint& checkpoint) {
  int64_t total = 0;
  for (const auto& [name, tensor] : checkpoint.tensors) total += tensor.numel();
  return total;
}

TEST(SafetensorsReal, ShardedCheckpoint) {
  std::string folder = shared_dir() + "/models/vit-cifar10-tiny";
  std::string index_path = folder + "/model.safetensors.index.json";
  ASSERT_TRUE(fs::exists(index_path)) << index_path << " missing; set ENGINE_SHARED_DIR";
  size_t weight_map_size = nlohmann::json::parse(read_bytes(index_path))["weight_map"].size();

  for (const std::string& source : {index_path, folder}) {
    Checkpoint checkpoint = load_checkpoint(source);
    EXPECT_EQ(checkpoint.source, source == folder ? index_path : source);
    EXPECT_EQ(checkpoint.directory, folder);
    EXPECT_EQ(checkpoint.tensors.size(), weight_map_size);
    EXPECT_EQ(total_numel(checkpoint), 5362762);
    EXPECT_TRUE(checkpoint.contains("cls_token"));
  }
}

// ---------------------------------------------------------------- malformed files

const char* kGoodEntry = R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";

TEST_F(SafetensorsTest, RejectsTruncatedFiles) {
  save_safetensors(file("good.safetensors"), {{"weight", Tensor::ones({4, 4})}});
  std::string bytes = read_bytes(file("good.safetensors"));

  write_bytes(file("cut.safetensors"), bytes.substr(0, bytes.size() - 4));
  std::string message = open_error(file("cut.safetensors"));
  EXPECT_THAT(message, HasSubstr(file("cut.safetensors")));
  EXPECT_THAT(message, HasSubstr("'weight'"));

  write_bytes(file("tiny.safetensors"), bytes.substr(0, 5));
  EXPECT_EQ(open_error(file("tiny.safetensors")),
            "safetensors file " + file("tiny.safetensors") + ": 5 bytes, shorter than the 8-byte header length");

  write_bytes(file("no_header.safetensors"), bytes.substr(0, 20));
  EXPECT_THAT(open_error(file("no_header.safetensors")), HasSubstr("exceeds the file size"));
}

TEST_F(SafetensorsTest, RejectsBadHeaderLengths) {
  std::string header = std::string("{") + kGoodEntry + "}";
  for (uint64_t length :
       {uint64_t(0xFFFFFFFFFFFF), uint64_t(1) << 63, UINT64_MAX - 1, uint64_t(header.size() + 100),
        uint64_t(header.size() + 16 + 1)}) {  // (the last: one byte past the end)
    write_raw(file("len.safetensors"), header, std::string(16, '\0'), length);
    std::string message = open_error(file("len.safetensors"));
    EXPECT_THAT(message, HasSubstr(file("len.safetensors")));
    EXPECT_THAT(message, HasSubstr("exceeds the file size"));
  }
}

TEST_F(SafetensorsTest, RejectsWhatIsNotAnExistingRegularFile) {
  EXPECT_EQ(open_error(file("missing.safetensors")),
            "cannot open safetensors file '" + file("missing.safetensors") + "': " + std::strerror(ENOENT));
  EXPECT_EQ(open_error(dir_.string()), "safetensors file " + dir_.string() + ": not a regular file");
}

TEST_F(SafetensorsTest, RejectsHeadersThatAreNotJsonObjects) {
  write_raw(file("bad.safetensors"), R"({"w": {"dtype": )", "");
  EXPECT_THAT(open_error(file("bad.safetensors")),
              HasSubstr(file("bad.safetensors") + ": header is not valid JSON"));
  write_raw(file("array.safetensors"), "[1, 2]", "");
  EXPECT_THAT(open_error(file("array.safetensors")), HasSubstr("not a JSON object"));
}

// Each malformed entry, the words its error must contain (besides the file and tensor).
struct BadEntry {
  std::string entry;
  std::string expected;
};

TEST_F(SafetensorsTest, RejectsMalformedEntries) {
  std::vector<BadEntry> cases = {
      {R"({"dtype":"F8","shape":[2],"data_offsets":[0,2]})", "unknown dtype 'F8'"},
      {R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,16]})",
       "data_offsets span 16 bytes but F32[2, 3] needs 24"},
      {R"({"dtype":"F32","shape":[2],"data_offsets":[0,16]})", "data_offsets span 16 bytes but F32[2] needs 8"},
      {R"({"dtype":"F32","shape":[4],"data_offsets":[8,24]})", "beyond the 16-byte data section"},
      {R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})", "begin after end"},
      {R"({"dtype":"F32","shape":[4]})", "missing 'data_offsets'"},
      {R"({"shape":[4],"data_offsets":[0,16]})", "missing 'dtype'"},
      {R"({"dtype":"F32","data_offsets":[0,16]})", "missing 'shape'"},
      {R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})", "negative or too large dimension"},
      // 2^63 is no int64_t; with a 0 beside it the tensor would need no bytes at all.
      {R"({"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]})", "negative or too large dimension"},
      {R"({"dtype":"F32","shape":"4","data_offsets":[0,16]})", "shape must be an array"},
      {R"({"dtype":"F32","shape":[4.0],"data_offsets":[0,16]})", "non-integer"},
      {R"({"dtype":32,"shape":[4],"data_offsets":[0,16]})", "dtype must be a string"},
      {R"({"dtype":"F32","shape":[4],"data_offsets":[0]})", "data_offsets must be two"},
      {R"({"dtype":"F32","shape":[4],"data_offsets":[-1,16]})", "data_offsets must be two"},
      {R"({"dtype":"F32","shape":[4],"data_offsets":[0,16.0]})", "data_offsets must be two"},
      {R"({"dtype":"F32","shape":[4],"data_offsets":[0,16,16]})", "data_offsets must be two"},
      {R"({"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]})", "is too large"},
      // No bytes, yet 2^63 elements in the other dimensions: their strides would overflow.
      {R"({"dtype":"U8","shape":[0,4611686018427387904,2],"data_offsets":[0,0]})", "is too large"},
      {R"([1, 2])", "entry must be an object"},
  };
  for (const BadEntry& bad : cases) {
    write_raw(file("entry.safetensors"), R"({"broken":)" + bad.entry + "}", std::string(16, '\1'));
    std::string message = open_error(file("entry.safetensors"));
    EXPECT_THAT(message, HasSubstr(file("entry.safetensors")));
    EXPECT_THAT(message, HasSubstr("'broken'"));
    EXPECT_THAT(message, HasSubstr(bad.expected));
  }
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  std::string header = R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  write_raw(file("overlap.safetensors"), header, std::string(16, '\0'));
  std::string message = open_error(file("overlap.safetensors"));
  EXPECT_THAT(message, HasSubstr(file("overlap.safetensors")));
  EXPECT_THAT(message, HasSubstr("'a' [0, 12] and 'b' [8, 16] overlap"));
}

TEST_F(SafetensorsTest, RejectsBadMetadata) {
  write_raw(file("meta.safetensors"), R"({"__metadata__":{"epochs":3}})", "");
  EXPECT_THAT(open_error(file("meta.safetensors")), HasSubstr("__metadata__ 'epochs' must be a string"));
  write_raw(file("meta.safetensors"), R"({"__metadata__":["pt"]})", "");
  EXPECT_THAT(open_error(file("meta.safetensors")), HasSubstr("__metadata__ must be an object"));
}

TEST_F(SafetensorsTest, MissingKeysNameTheKeyAndSource) {
  save_safetensors(file("a.safetensors"), {{"x", Tensor::ones({2})}});
  SafetensorsFile opened = SafetensorsFile::open(file("a.safetensors"));
  EXPECT_FALSE(opened.contains("y"));
  EXPECT_THAT(error_of([&] { opened.get("y"); }), HasSubstr(file("a.safetensors") + ": no tensor 'y'"));

  Checkpoint checkpoint = load_checkpoint(file("a.safetensors"));
  EXPECT_EQ(checkpoint.directory, dir_.string());
  EXPECT_TRUE(checkpoint.contains("x"));
  EXPECT_FALSE(checkpoint.contains("y"));
  EXPECT_THAT(error_of([&] { checkpoint.get("y"); }), HasSubstr(file("a.safetensors") + ": no tensor 'y'"));
}

// ---------------------------------------------------------------- sharded checkpoints

void write_index(const std::string& path, const nlohmann::json& weight_map) {
  write_bytes(path, nlohmann::json{{"metadata", {{"total_size", 8}}}, {"weight_map", weight_map}}.dump());
}

TEST_F(SafetensorsTest, ShardedIndexLoadsEveryShard) {
  // Distinct values in every tensor: a tensor read at another's offset or from the other shard shows.
  save_safetensors(file("s1.safetensors"),
                   {{"a", Tensor::from_vector<float>({1, 2}, {2})}, {"b", Tensor::from_vector<float>({3, 5, 7}, {3})}},
                   {{"shard", "1"}});
  save_safetensors(file("s2.safetensors"), {{"c", Tensor::full({1}, 4.0)}});
  write_index(file("model.safetensors.index.json"),
              {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}});

  Checkpoint checkpoint = load_checkpoint(dir_.string());
  EXPECT_EQ(checkpoint.directory, dir_.string());
  EXPECT_EQ(checkpoint.tensors.size(), 3u);
  EXPECT_EQ(checkpoint.metadata, (Metadata{{"shard", "1"}}));
  EXPECT_EQ(checkpoint.get("a").to_floats(), (std::vector<float>{1, 2}));
  EXPECT_EQ(checkpoint.get("b").to_floats(), (std::vector<float>{3, 5, 7}));
  EXPECT_EQ(checkpoint.get("c").to_floats(), std::vector<float>{4.0f});
}

TEST_F(SafetensorsTest, ShardedIndexErrors) {
  std::string index = file("model.safetensors.index.json");
  write_index(index, {{"a", "missing.safetensors"}});
  std::string message = error_of([&] { load_checkpoint(index); });
  EXPECT_THAT(message, HasSubstr(index));
  EXPECT_THAT(message, HasSubstr(file("missing.safetensors")));

  save_safetensors(file("s1.safetensors"), {{"a", Tensor::ones({2})}});
  write_index(index, {{"a", "s1.safetensors"}, {"ghost", "s1.safetensors"}});
  message = error_of([&] { load_checkpoint(index); });
  EXPECT_THAT(message, HasSubstr(index));
  EXPECT_THAT(message, HasSubstr("'ghost'"));
  EXPECT_THAT(message, HasSubstr(file("s1.safetensors")));

  write_bytes(index, R"({"metadata": {}})");
  EXPECT_THAT(error_of([&] { load_checkpoint(index); }), HasSubstr(index + ": no 'weight_map'"));
}

TEST_F(SafetensorsTest, DirectoryWithoutCheckpointListsWhatWasLookedFor) {
  std::string message = error_of([&] { load_checkpoint(dir_.string()); });
  EXPECT_THAT(message, HasSubstr(dir_.string()));
  EXPECT_THAT(message, HasSubstr("model.safetensors"));
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
}

TEST_F(SafetensorsTest, DirectoryWithTwoCheckpointsIsRefused) {
  // A single-file checkpoint written over a sharded one must not be loaded silently in its place, nor the reverse.
  save_safetensors(file("model.safetensors"), {{"a", Tensor::ones({2})}});
  save_safetensors(file("s1.safetensors"), {{"a", Tensor::zeros({2})}});
  write_index(file("model.safetensors.index.json"), {{"a", "s1.safetensors"}});
  std::string message = error_of([&] { load_checkpoint(dir_.string()); });
  EXPECT_THAT(message, HasSubstr(dir_.string()));
  EXPECT_THAT(message, HasSubstr("model.safetensors and"));
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
}

// ---------------------------------------------------------------- writing

TEST_F(SafetensorsTest, SavingOverAFileReplacesItFully) {
  std::string path = file("a.safetensors");
  save_safetensors(path, {{"big", Tensor::ones({1000})}, {"other", Tensor::ones({10})}});
  save_safetensors(path, {{"small", Tensor::full({2}, 5.0)}});
  SafetensorsFile opened = SafetensorsFile::open(path);
  EXPECT_EQ(opened.names(), std::vector<std::string>{"small"});
  EXPECT_LT(fs::file_size(path), 200u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SafetensorsTest, FailedSavesThrowAndLeaveNoTempFile) {
  std::string missing_dir = file("no/such/dir/a.safetensors");
  EXPECT_THAT(error_of([&] {
                save_safetensors(missing_dir, {{"x", Tensor::ones({2})}});
              }),
              HasSubstr(missing_dir));

  // An existing folder is not replaced.
  fs::create_directory(file("occupied"));
  EXPECT_THAT(error_of([&] {
                save_safetensors(file("occupied"), {{"x", Tensor::ones({2})}});
              }),
              HasSubstr(file("occupied")));

  EXPECT_THAT(error_of([&] {
                save_safetensors(file("d.safetensors"), {{"x", Tensor::ones({1})}, {"x", Tensor::ones({1})}});
              }),
              HasSubstr("duplicate tensor name 'x'"));
  EXPECT_THAT(error_of([&] { save_safetensors(file("m.safetensors"), {{"__metadata__", Tensor::ones({1})}}); }),
              HasSubstr("'__metadata__' is reserved"));
  EXPECT_THAT(error_of([&] { save_safetensors(file("u.safetensors"), {{"x", Tensor()}}); }),
              HasSubstr("tensor 'x' is undefined"));

  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir_)) left.push_back(entry.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"occupied"});
}

// A write that the file-size limit stops fails with that reason (EFBIG), not
// the ENOENT that finding no file to replace left in errno; the file it was to
// replace is left as it was, and no temporary file is left beside it.
TEST_F(SafetensorsTest, AFailedWriteGivesItsReasonAndKeepsTheOldFile) {
  const std::string path = file("big.safetensors");
  const Tensor old = Tensor::from_vector<float>({1.5f, -2.0f, 3.25f}, {3});
  save_safetensors(path, {{"x", old}});
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  {
    testing::ScopedLimit small_files(RLIMIT_FSIZE, 4096);
    EXPECT_THAT(error_of([&] { save_safetensors(path, {{"x", Tensor::ones({1 << 16})}}); }),
                AllOf(HasSubstr(path), HasSubstr(std::strerror(EFBIG))));
  }
  std::signal(SIGXFSZ, old_handler);
  expect_same_bits(SafetensorsFile::open(path).get("x"), old);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

TEST_F(SafetensorsTest, WriteFileAtomic) {
  std::string path = file("out.json");
  write_file_atomic(path, "{\"a\": 1, \"long\": \"xxxxxxxxxxxxxxxx\"}");
  write_file_atomic(path, "{}");
  EXPECT_EQ(read_bytes(path), "{}");
  EXPECT_THAT(error_of([&] { write_file_atomic(file("nope/out.json"), "{}"); }),
              HasSubstr(file("nope/out.json")));
}

TEST_F(SafetensorsTest, WriteFileAtomicWritesThroughASymbolicLink) {
  fs::create_directory(file("real"));
  const std::string target = file("real/out.json"), link = file("out.json");
  write_file_atomic(target, "old");
  fs::create_symlink("real/out.json", link);
  write_file_atomic(link, "new");
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(read_bytes(target), "new");
  // The temporary file went next to the target and is gone.
  EXPECT_EQ(std::distance(fs::directory_iterator(file("real")), fs::directory_iterator()), 1);
}

TEST_F(SafetensorsTest, WriteFileAtomicRefusesWhatIsNotARegularFile) {
  const std::string fifo = file("results.json");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  EXPECT_EQ(error_of([&] { write_file_atomic(fifo, "{}"); }),
            "cannot write " + fifo + ": it is a FIFO, not a regular file");
  EXPECT_TRUE(fs::is_fifo(fifo));
  const std::string dangling = file("dangling.json");
  fs::create_symlink("missing.json", dangling);
  EXPECT_EQ(error_of([&] { write_file_atomic(dangling, "{}"); }),
            "cannot write " + dangling + ": it is a symbolic link to the missing " +
                fs::absolute(file("missing.json")).lexically_normal().string());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 2);
}

}  // namespace
}  // namespace engine
