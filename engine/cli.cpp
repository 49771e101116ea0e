#include "engine/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/config.h"
#include "engine/error.h"
#include "engine/os_error.h"

namespace engine {

Flags::Flags(std::string usage, std::vector<FlagSpec> specs, std::vector<std::string> positional_names)
    : usage_(std::move(usage)), specs_(std::move(specs)), positional_names_(std::move(positional_names)) {}

const FlagSpec& Flags::spec(const std::string& name) const {
  for (const FlagSpec& s : specs_) {
    if (s.name == name) return s;
  }
  std::vector<std::string> names;
  for (const FlagSpec& s : specs_) names.push_back(s.name);
  const std::string near = nearest_name(name, names);
  fail("unknown flag --{}{}", name, near.empty() ? std::string(" (see --help)") : fmt::format("; did you mean --{}?", near));
}

void Flags::store(const FlagSpec& s, const std::string& value) {
  std::vector<std::string>& given = values_[s.name];
  check(given.empty() || s.repeatable, "flag --{} given twice ('{}', then '{}'); give it once", s.name, given.front(),
        value);
  given.push_back(value);
}

bool Flags::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fmt::print("{}", help_text());
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const FlagSpec& s = spec(name);
    if (s.is_switch) {
      value = inline_value ? value : "true";
    } else if (!inline_value) {
      check(i + 1 < argc, "flag --{} needs a value", name);
      value = argv[++i];
    }
    store(s, value);
  }
  const bool variadic = !positional_names_.empty() && positional_names_.back().size() > 3 &&
                        positional_names_.back().compare(positional_names_.back().size() - 3, 3, "...") == 0;
  check(variadic || positional_.size() <= positional_names_.size(), "unexpected argument '{}' (see --help)",
        positional_.size() > positional_names_.size() ? positional_[positional_names_.size()] : "");
  return true;
}

bool Flags::has(const std::string& name) const { return values_.count(name) || !spec(name).default_value.empty(); }

std::string Flags::get(const std::string& name) const {
  auto found = values_.find(name);
  if (found != values_.end()) return fmt::format("{}", fmt::join(found->second, ","));
  const FlagSpec& s = spec(name);
  return s.is_switch && s.default_value.empty() ? "false" : s.default_value;
}

std::vector<std::string> Flags::occurrences(const std::string& name) const {
  spec(name);  // (an unknown name is an error)
  auto found = values_.find(name);
  return found == values_.end() ? std::vector<std::string>{} : found->second;
}

namespace {

int64_t parse_flag_int(const std::string& name, const std::string& text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  check(ec == std::errc() && end == text.data() + text.size() && !text.empty(),
        "flag --{}: '{}' is not an integer", name, text);
  return value;
}

}  // namespace

int64_t Flags::get_int(const std::string& name) const { return parse_flag_int(name, get(name)); }

int64_t Flags::get_int_at_least(const std::string& name, int64_t min) const {
  const int64_t value = get_int(name);
  check(value >= min, "flag --{}: {} must be >= {}", name, value, min);
  return value;
}

std::vector<int64_t> Flags::get_int_list(const std::string& name) const {
  std::vector<int64_t> values;
  for (const std::string& item : split_list(get(name))) values.push_back(parse_flag_int(name, item));
  return values;
}

bool Flags::get_bool(const std::string& name) const {
  const std::string text = get(name);
  bool value = false;
  if (const char* why = parse_bool(text, value)) fail("flag --{}: '{}' {}", name, text, why);
  return value;
}

std::string Flags::help_text() const {
  std::string text = fmt::format("usage: {}\n", usage_);
  for (const FlagSpec& s : specs_) {
    text += fmt::format("  --{:<16} {}{}{}\n", s.name + (s.is_switch ? "" : " X"), s.help,
                        s.default_value.empty() ? "" : fmt::format(" (default {})", s.default_value),
                        s.repeatable ? " (repeatable)" : "");
  }
  return text;
}

namespace {

// "section.key=..." (or ".key=..."): where an override starts.
bool starts_assignment(const std::string& piece) {
  const size_t equals = piece.find('=');
  if (equals == std::string::npos || equals == 0) return false;
  const size_t begin = piece.find_first_not_of(" \t"), end = piece.find_last_not_of(" \t", equals - 1);
  if (end == std::string::npos || begin > end) return false;
  const std::string name = piece.substr(begin, end - begin + 1);
  const bool name_chars = std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-';
  });
  return name_chars && name.find('.') != std::string::npos;
}

}  // namespace

std::vector<std::string> split_overrides(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string piece = text.substr(start, comma - start);
    if (!piece.empty()) {
      const bool list_item = !parts.empty() && !starts_assignment(piece);  // "eval.latency_batches=1,256"
      if (list_item) parts.back() += "," + piece;
      else parts.push_back(piece);
    }
    start = comma + 1;
  }
  return parts;
}

FlagSpec config_override_flag(const std::string& example) {
  return {"set", "override config values: --set " + example, "", /*is_switch=*/false, /*repeatable=*/true};
}

void apply_config_overrides(const Flags& flags, Config& config) {
  for (const std::string& given : flags.occurrences("set")) {
    for (const std::string& assignment : split_overrides(given)) config.apply_override(assignment);
  }
}

void prepare_output_file(const std::string& name, const std::string& path) {
  namespace fs = std::filesystem;
  check(!path.empty(), "{}: empty path", name);
  check(!fs::is_directory(path), "{}: '{}' is a folder, not a file", name, path);
  const fs::path folder = fs::absolute(path).parent_path();
  std::error_code error;
  fs::create_directories(folder, error);
  check(!error, "{}: cannot create the folder of '{}': {}", name, path, error.message());
  const int access_error = access(folder.c_str(), W_OK) == 0 ? 0 : errno;
  check_os_error(access_error, fmt::format("{}: cannot write", name), path);
}

namespace {

// Worker threads that spin while they wait take the cores that the data
// loader's threads and the next op need. OpenMP's: on a 2-core machine the
// default job ran 2 min 52 s with spinning threads and 2 min 15 s without, and
// a batch-1 forward took 140 ms instead of 27 ms. OpenBLAS's (its pthread
// build) spin for 2^28 cycles after each GEMM, calling sched_yield: a third of
// a CPU batch-1 profile; 2^4 (the least it takes) puts them to sleep at once.
// Both libraries read their variable once, when loaded (before main), so a
// tool sets the variables the user has not set and re-executes itself, once.
void use_sleeping_workers(char** argv) {
  bool changed = false;
  const std::pair<const char*, const char*> settings[] = {{"OMP_WAIT_POLICY", "passive"},
                                                          {"OPENBLAS_THREAD_TIMEOUT", "4"}};
  for (const auto& [name, value] : settings) {
    if (std::getenv(name) != nullptr) continue;
    setenv(name, value, /*overwrite=*/0);
    changed = true;
  }
  if (changed) execv("/proc/self/exe", argv);  // returns only on failure: then carry on as is
}

}  // namespace

int run_tool(const char* tool, int (*body)(int, char**), int argc, char** argv) {
  use_sleeping_workers(argv);
  try {
    return body(argc, argv);
  } catch (const Error& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, e.what());
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: unexpected error: {}\n", tool, e.what());
  }
  return 1;
}

}  // namespace engine
