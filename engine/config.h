// INI configuration with typed getters and strict validation.
//
//   [train]            # sections; keys before any section live in section ""
//   ; a whole-line comment starts with ; or #
//   lr = 3e-4          # after a value only # (after whitespace) starts one:
//   groups = 0 ; 5     # ';' is list content here, never a comment
//
// Every getter records the key it was asked for, so that after a program has
// read everything it understands, check_all_used() can reject typos in the
// file ("unknown key 'learnig_rate' in [train]; did you mean 'learning_rate'?").
// All errors are engine::Error and name file:line, [section] key and the value.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/error.h"

namespace engine {

class Config {
 public:
  static Config load(const std::string& path);
  static Config parse(const std::string& text, const std::string& source = "<string>");

  // Command-line overrides; the key need not exist in the file. Values set
  // this way are reported as "<override>" instead of file:line.
  void set(const std::string& section, const std::string& key, const std::string& value);
  void apply_override(const std::string& dotted_assignment);  // "train.lr=0.1"

  // Getters are const; the set of names they were asked for is mutable
  // bookkeeping for check_all_used(). has() counts as asking.
  bool has(const std::string& section, const std::string& key) const;

  std::string get_string(const std::string& section, const std::string& key,
                         const std::string& def) const;
  std::string get_string(const std::string& section, const std::string& key) const;
  int64_t get_int(const std::string& section, const std::string& key, int64_t def) const;
  int64_t get_int(const std::string& section, const std::string& key) const;
  double get_double(const std::string& section, const std::string& key, double def) const;
  double get_double(const std::string& section, const std::string& key) const;
  // true/false, yes/no, on/off, 1/0; case-insensitive.
  bool get_bool(const std::string& section, const std::string& key, bool def) const;
  bool get_bool(const std::string& section, const std::string& key) const;
  std::string get_choice(const std::string& section, const std::string& key,
                         const std::string& def,
                         const std::vector<std::string>& allowed) const;
  // Comma-separated; items are trimmed and empty items dropped.
  std::vector<std::string> get_list(const std::string& section, const std::string& key,
                                    const std::vector<std::string>& def) const;
  std::vector<int64_t> get_int_list(const std::string& section, const std::string& key,
                                    const std::vector<int64_t>& def) const;
  std::vector<double> get_double_list(const std::string& section, const std::string& key,
                                      const std::vector<double>& def) const;
  // The same with a range check: a value out of range (the default is not
  // checked) is an error naming where it was set, the key and the range.
  int64_t get_int_at_least(const std::string& section, const std::string& key, int64_t def, int64_t min) const;
  double get_double_in(const std::string& section, const std::string& key, double def, double min,
                       double below) const;  // [min, below)
  double get_double_above(const std::string& section, const std::string& key, double def,
                          double bound) const;  // (bound, inf)

  // Throws listing every section or key that no getter asked for, each with a
  // suggestion of the nearest name that was asked for, if one is close.
  void check_all_used() const;

  // Throws "missing key [section] key in <file>", with a hint when a key of
  // that section no getter has asked for is a near miss ("is 'modle' at
  // <file>:5 a typo?"). The getters without a default call it; callers call it
  // for keys that only some settings require.
  [[noreturn]] void fail_missing(const std::string& section, const std::string& key) const;

  const std::string& source() const { return source_; }
  // Where a key was set, for errors the caller raises: "file:line",
  // "<override>", or the file when the key is not set (its default is used).
  std::string where(const std::string& section, const std::string& key) const;

 private:
  struct Entry {
    std::string value;
    int line;  // 0: set by override
  };
  struct Section {
    int line = 0;  // first header line; 0 if created by an override
    std::map<std::string, Entry> entries;
  };

  const Entry* find(const std::string& section, const std::string& key) const;
  const Entry& require(const std::string& section, const std::string& key) const;
  std::string where(int line) const;
  std::string typo_hint(const std::string& section, const std::string& key) const;
  std::string section_typo_hint(const std::string& section) const;
  [[noreturn]] void bad_value(const std::string& section, const std::string& key,
                              const Entry& entry, const std::string& problem) const;
  int64_t to_int(const std::string& section, const std::string& key, const Entry& e) const;
  double to_double(const std::string& section, const std::string& key, const Entry& e) const;
  bool to_bool(const std::string& section, const std::string& key, const Entry& e) const;
  template <typename T>
  std::vector<T> get_number_list(const std::string& section, const std::string& key, const std::vector<T>& def,
                                 const char* (*parse)(const std::string&, T&)) const;

  std::string source_;
  std::map<std::string, Section> sections_;
  mutable std::map<std::string, std::set<std::string>> asked_;  // section -> keys
};

// Runs read(), a check of a setting's value that Config cannot make itself (a
// mixer spec; a layer choice against the depth of a checkpoint loaded later),
// prefixing the engine::Error it raises with where the setting came from, as
// Config::where tells it (file:line, <override>, or the file), and its name.
template <typename Read>
auto in_context(const std::string& where, const std::string& section, const std::string& key, Read read)
    -> decltype(read()) {
  try {
    return read();
  } catch (const Error& e) {
    fail("{}: [{}] {}: {}", where, section, key, e.what());
  }
}

// The same, asking c where the setting came from; an empty key names the
// whole section (a preset's).
template <typename Read>
auto in_context(const Config& c, const std::string& section, const std::string& key, Read read)
    -> decltype(read()) {
  if (!key.empty()) return in_context(c.where(section, key), section, key, read);
  try {
    return read();
  } catch (const Error& e) {
    fail("{}: [{}]: {}", c.source(), section, e.what());
  }
}

// "a, b,,c " -> {"a", "b", "c"}: comma-separated items, trimmed, empty ones dropped.
std::vector<std::string> split_list(const std::string& value);

// true/false, yes/no, on/off, 1/0, case-insensitive (config values and switch
// flags). Returns nullptr on success, else why `text` is not a boolean,
// phrased to follow the quoted value.
const char* parse_bool(const std::string& text, bool& out);

// The candidate closest to `word` by edit distance, or "" if none is close
// enough to be a plausible typo. Shared with CLI flag parsing.
std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace engine
