#include "engine/config.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>

#include "engine/error.h"
#include "engine/os_error.h"

namespace engine {
namespace {

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t begin = s.find_first_not_of(ws);
  if (begin == std::string_view::npos) return "";
  return std::string(s.substr(begin, s.find_last_not_of(ws) - begin + 1));
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A whole line is a comment when it starts with '#' or ';'. After a value only
// '#' preceded by whitespace starts one: ';' separates list items (groups =
// 0 ; 5), so taking it for a comment would drop items silently, while "#"
// after a space is never list content. Values such as "http://host/#frag"
// are kept whole.
std::string strip_comment(const std::string& line) {
  const size_t first = line.find_first_not_of(" \t");
  if (first != std::string::npos && (line[first] == '#' || line[first] == ';')) return "";
  for (size_t i = 1; i < line.size(); ++i) {
    if (line[i] == '#' && std::isspace(static_cast<unsigned char>(line[i - 1]))) return line.substr(0, i);
  }
  return line;
}

// Section names may not contain '.', which separates section from key in
// overrides ("train.lr=0.1"); keys may.
bool is_name(const std::string& s, bool allow_dot) {
  if (s.empty()) return false;
  return std::none_of(s.begin(), s.end(), [&](char c) {
    return std::isspace(static_cast<unsigned char>(c)) || c == '[' || c == ']' || c == '=' ||
           (c == '.' && !allow_dot);
  });
}

// "[name]" -> name; nullopt if `s` is not a well-formed section header.
std::optional<std::string> header_name(const std::string& s) {
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') return std::nullopt;
  std::string name = trim(std::string_view(s).substr(1, s.size() - 2));
  if (!is_name(name, /*allow_dot=*/false)) return std::nullopt;
  return name;
}

// "key = value" -> {key, value}; nullopt if `s` is not an assignment.
std::optional<std::pair<std::string, std::string>> assignment(const std::string& s) {
  const size_t eq = s.find('=');
  if (eq == std::string::npos) return std::nullopt;
  std::string key = trim(std::string_view(s).substr(0, eq));
  if (!is_name(key, /*allow_dot=*/true)) return std::nullopt;
  return std::make_pair(key, trim(std::string_view(s).substr(eq + 1)));
}

// The parse_* functions return nullptr on success, else the reason the text
// was rejected, phrased to follow "[section] key = 'value' ".
const char* parse_int(const std::string& text, int64_t& out) {
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, out);
  if (ec == std::errc::result_out_of_range) return "is out of range (expected 64-bit int)";
  if (ec != std::errc() || stop != end) return "is not an integer (expected int)";
  return nullptr;
}

const char* parse_double(const std::string& text, double& out) {
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, out);
  if (ec == std::errc::result_out_of_range) return "is out of range (expected float)";
  if (ec != std::errc() || stop != end) return "is not a number (expected float)";
  // from_chars accepts "nan" and "inf"; in a config they are always mistakes.
  if (!std::isfinite(out)) return "is not a finite number (expected float)";
  return nullptr;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);  // distances from a[0..i) to each b prefix
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row.back();
}

// "; did you mean [train]?" or "" when nothing asked for is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& known,
                         const char* open, const char* close) {
  const std::string near = nearest_name(word, known);
  return near.empty() ? "" : fmt::format("; did you mean {}{}{}?", open, near, close);
}

}  // namespace

std::vector<std::string> split_list(const std::string& value) {
  std::vector<std::string> items;
  std::istringstream in(value);
  for (std::string item; std::getline(in, item, ',');) {
    item = trim(item);
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

const char* parse_bool(const std::string& text, bool& out) {
  const std::string v = lower(text);
  const bool is_true = v == "true" || v == "yes" || v == "on" || v == "1";
  if (!is_true && v != "false" && v != "no" && v != "off" && v != "0")
    return "is not a boolean (expected true/false, yes/no, on/off or 1/0)";
  out = is_true;
  return nullptr;
}

std::string nearest_name(const std::string& word, const std::vector<std::string>& candidates) {
  if (word.empty()) return "";
  // A typo is a couple of edits, more for long words, but never a rewrite of
  // the whole word ("lr" is not a typo of "bs").
  const size_t limit = std::min(std::max<size_t>(2, word.size() / 3), word.size() - 1);
  std::string best;
  size_t best_distance = limit + 1;
  for (const std::string& candidate : candidates) {
    const size_t d = edit_distance(word, candidate);
    if (d < best_distance) best = candidate, best_distance = d;
  }
  return best;
}

Config Config::load(const std::string& path) {
  // A directory opens fine on Linux and then reads as an empty config.
  check(!std::filesystem::is_directory(path), "cannot read config file '{}': is a directory",
        path);
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) fail_os_error(errno, "cannot open config file", path);
  std::ostringstream text;
  text << in.rdbuf();
  check(!in.bad(), "cannot read config file '{}'", path);
  return parse(text.str(), path);
}

Config Config::parse(const std::string& text, const std::string& source) {
  Config config;
  config.source_ = source;
  // A UTF-8 byte-order mark (some editors write one) is not part of the first line.
  const std::string bom = "\xEF\xBB\xBF";
  std::istringstream in(text.rfind(bom, 0) == 0 ? text.substr(bom.size()) : text);
  std::string raw, section;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string s = trim(strip_comment(raw));
    if (s.empty()) continue;
    if (auto name = header_name(s)) {
      section = *name;
      config.sections_.try_emplace(section, Section{line, {}});  // keeps the first line
      continue;
    }
    auto kv = assignment(s);
    check(kv.has_value(), "{}:{}: malformed line '{}' (expected [section] or key = value)",
          source, line, trim(raw));
    Section& sec = config.sections_.try_emplace(section, Section{line, {}}).first->second;
    const auto [it, added] = sec.entries.emplace(kv->first, Entry{kv->second, line});
    check(added, "{}:{}: duplicate key '{}' in [{}] (first set at line {})", source, line,
          kv->first, section, it->second.line);
  }
  return config;
}

void Config::set(const std::string& section, const std::string& key, const std::string& value) {
  sections_[section].entries[key] = Entry{value, 0};
}

void Config::apply_override(const std::string& dotted_assignment) {
  const std::string& a = dotted_assignment;
  const size_t eq = a.find('=');
  const size_t dot = a.find('.');
  // An empty section (".key=v") addresses keys that precede any section.
  const bool ok = eq != std::string::npos && dot < eq;
  const std::string section = ok ? trim(std::string_view(a).substr(0, dot)) : "";
  const std::string key = ok ? trim(std::string_view(a).substr(dot + 1, eq - dot - 1)) : "";
  check(ok && (section.empty() || is_name(section, false)) && is_name(key, true),
        "bad override '{}': expected section.key=value", a);
  set(section, key, trim(std::string_view(a).substr(eq + 1)));
}

const Config::Entry* Config::find(const std::string& section, const std::string& key) const {
  asked_[section].insert(key);
  const auto s = sections_.find(section);
  if (s == sections_.end()) return nullptr;
  const auto e = s->second.entries.find(key);
  return e == s->second.entries.end() ? nullptr : &e->second;
}

const Config::Entry& Config::require(const std::string& section, const std::string& key) const {
  const Entry* e = find(section, key);
  if (e == nullptr) fail_missing(section, key);
  return *e;
}

void Config::fail_missing(const std::string& section, const std::string& key) const {
  fail("missing key [{}] {} in {}{}", section, key, source_, typo_hint(section, key));
}

// " (is 'modle' at cfg.ini:5 a typo?)" when a key of `section` that no getter
// has asked for is a near miss of `key`; for a section the file lacks, the
// same for a section that no getter has asked about; else "".
std::string Config::typo_hint(const std::string& section, const std::string& key) const {
  const auto s = sections_.find(section);
  if (s == sections_.end()) return section_typo_hint(section);
  const std::set<std::string>& asked = asked_[section];
  std::vector<std::string> unasked;
  for (const auto& [name, entry] : s->second.entries) {
    if (asked.count(name) == 0) unasked.push_back(name);
  }
  const std::string near = nearest_name(key, unasked);
  if (near.empty()) return "";
  return fmt::format(" (is '{}' at {} a typo?)", near, where(s->second.entries.at(near).line));
}

std::string Config::section_typo_hint(const std::string& section) const {
  std::vector<std::string> unasked;
  for (const auto& [name, sec] : sections_) {
    if (!name.empty() && asked_.count(name) == 0) unasked.push_back(name);
  }
  const std::string near = nearest_name(section, unasked);
  if (near.empty()) return "";
  return fmt::format(" (is [{}] at {} a typo?)", near, where(sections_.at(near).line));
}

std::string Config::where(int line) const {
  return line == 0 ? "<override>" : fmt::format("{}:{}", source_, line);
}

std::string Config::where(const std::string& section, const std::string& key) const {
  const auto s = sections_.find(section);
  if (s == sections_.end()) return source_;
  const auto e = s->second.entries.find(key);
  return e == s->second.entries.end() ? source_ : where(e->second.line);
}

void Config::bad_value(const std::string& section, const std::string& key, const Entry& entry,
                       const std::string& problem) const {
  fail("{}: [{}] {} = '{}' {}", where(entry.line), section, key, entry.value, problem);
}

int64_t Config::to_int(const std::string& section, const std::string& key,
                       const Entry& e) const {
  int64_t value = 0;
  if (const char* why = parse_int(e.value, value)) bad_value(section, key, e, why);
  return value;
}

double Config::to_double(const std::string& section, const std::string& key,
                         const Entry& e) const {
  double value = 0;
  if (const char* why = parse_double(e.value, value)) bad_value(section, key, e, why);
  return value;
}

bool Config::to_bool(const std::string& section, const std::string& key, const Entry& e) const {
  bool value = false;
  if (const char* why = parse_bool(e.value, value)) bad_value(section, key, e, why);
  return value;
}

bool Config::has(const std::string& section, const std::string& key) const {
  return find(section, key) != nullptr;
}

std::string Config::get_string(const std::string& section, const std::string& key,
                               const std::string& def) const {
  const Entry* e = find(section, key);
  return e ? e->value : def;
}

std::string Config::get_string(const std::string& section, const std::string& key) const {
  return require(section, key).value;
}

int64_t Config::get_int(const std::string& section, const std::string& key, int64_t def) const {
  const Entry* e = find(section, key);
  return e ? to_int(section, key, *e) : def;
}

int64_t Config::get_int_at_least(const std::string& section, const std::string& key, int64_t def,
                                 int64_t min) const {
  const Entry* e = find(section, key);
  if (!e) return def;
  const int64_t value = to_int(section, key, *e);
  if (value < min) bad_value(section, key, *e, fmt::format("must be >= {}", min));
  return value;
}

double Config::get_double_in(const std::string& section, const std::string& key, double def, double min,
                             double below) const {
  const Entry* e = find(section, key);
  if (!e) return def;
  const double value = to_double(section, key, *e);
  if (!(value >= min && value < below)) bad_value(section, key, *e, fmt::format("must be in [{}, {})", min, below));
  return value;
}

double Config::get_double_above(const std::string& section, const std::string& key, double def,
                                double bound) const {
  const Entry* e = find(section, key);
  if (!e) return def;
  const double value = to_double(section, key, *e);
  if (!(value > bound)) bad_value(section, key, *e, fmt::format("must be > {}", bound));
  return value;
}

int64_t Config::get_int(const std::string& section, const std::string& key) const {
  return to_int(section, key, require(section, key));
}

double Config::get_double(const std::string& section, const std::string& key, double def) const {
  const Entry* e = find(section, key);
  return e ? to_double(section, key, *e) : def;
}

double Config::get_double(const std::string& section, const std::string& key) const {
  return to_double(section, key, require(section, key));
}

bool Config::get_bool(const std::string& section, const std::string& key, bool def) const {
  const Entry* e = find(section, key);
  return e ? to_bool(section, key, *e) : def;
}

bool Config::get_bool(const std::string& section, const std::string& key) const {
  return to_bool(section, key, require(section, key));
}

std::string Config::get_choice(const std::string& section, const std::string& key,
                               const std::string& def,
                               const std::vector<std::string>& allowed) const {
  const Entry* e = find(section, key);
  if (!e) return def;
  if (std::find(allowed.begin(), allowed.end(), e->value) != allowed.end()) return e->value;
  bad_value(section, key, *e,
            fmt::format("is not one of: {}{}", fmt::join(allowed, ", "),
                        did_you_mean(e->value, allowed, "'", "'")));
}

std::vector<std::string> Config::get_list(const std::string& section, const std::string& key,
                                          const std::vector<std::string>& def) const {
  const Entry* e = find(section, key);
  return e ? split_list(e->value) : def;
}

template <typename T>
std::vector<T> Config::get_number_list(const std::string& section, const std::string& key,
                                       const std::vector<T>& def, const char* (*parse)(const std::string&, T&)) const {
  const Entry* e = find(section, key);
  if (!e) return def;
  std::vector<T> values;
  for (const std::string& item : split_list(e->value)) {
    T value{};
    if (const char* why = parse(item, value))
      bad_value(section, key, *e, fmt::format("has item '{}' that {}", item, why));
    values.push_back(value);
  }
  return values;
}

std::vector<int64_t> Config::get_int_list(const std::string& section, const std::string& key,
                                          const std::vector<int64_t>& def) const {
  return get_number_list(section, key, def, parse_int);
}

std::vector<double> Config::get_double_list(const std::string& section, const std::string& key,
                                            const std::vector<double>& def) const {
  return get_number_list(section, key, def, parse_double);
}

void Config::check_all_used() const {
  std::vector<std::string> known_sections;
  for (const auto& [name, keys] : asked_) known_sections.push_back(name);

  std::vector<std::pair<int, std::string>> problems;  // (line, message)
  for (const auto& [name, sec] : sections_) {
    const auto asked = asked_.find(name);
    // Keys before any section have no header to blame; check them one by one.
    if (asked == asked_.end() && !name.empty()) {
      problems.emplace_back(sec.line, fmt::format("{}: unknown section [{}]{}", where(sec.line),
                                                  name, did_you_mean(name, known_sections, "[", "]")));
      continue;
    }
    std::vector<std::string> known_keys;
    if (asked != asked_.end()) known_keys.assign(asked->second.begin(), asked->second.end());
    for (const auto& [key, entry] : sec.entries) {
      if (std::binary_search(known_keys.begin(), known_keys.end(), key)) continue;
      problems.emplace_back(entry.line,
                            fmt::format("{}: unknown key '{}' in [{}]{}", where(entry.line), key,
                                        name, did_you_mean(key, known_keys, "'", "'")));
    }
  }
  if (problems.empty()) return;
  std::stable_sort(problems.begin(), problems.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> messages;
  for (auto& [line, message] : problems) messages.push_back(std::move(message));
  fail("{}", fmt::join(messages, "\n"));
}

}  // namespace engine
