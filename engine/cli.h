// Command-line flags for the tools: `--name value` / `--name=value`,
// boolean `--name`, positional arguments, --help. An unknown flag is an error
// that suggests the nearest known one.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace engine {

struct FlagSpec {
  std::string name;         // without the leading dashes
  std::string help;
  std::string default_value;  // "" and !is_switch: optional with no default
  bool is_switch = false;   // takes no value ("true" when present)
  // May be given more than once: the values accumulate, joined by commas (as
  // --set takes them). Any other flag given twice is an error, since the
  // first value would silently be lost.
  bool repeatable = false;
};

class Flags {
 public:
  // `usage` is the one-line synopsis; positional names are listed for --help.
  // A last positional name ending in "..." (e.g. "OVERRIDES...") takes any
  // number of arguments; otherwise extra arguments are an error.
  Flags(std::string usage, std::vector<FlagSpec> specs, std::vector<std::string> positional_names = {});
  // Returns false when --help was given (help already printed).
  bool parse(int argc, char** argv);

  bool has(const std::string& name) const;  // given on the command line or defaulted
  std::string get(const std::string& name) const;  // a repeatable flag's values joined by commas
  // Each value a repeatable flag was given, in order (none: not given).
  std::vector<std::string> occurrences(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  // get_int that fails, naming the flag and the value, below `min`.
  int64_t get_int_at_least(const std::string& name, int64_t min) const;
  std::vector<int64_t> get_int_list(const std::string& name) const;  // "2,3,4" (empty: none)
  bool get_bool(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string help_text() const;

 private:
  const FlagSpec& spec(const std::string& name) const;
  // Records a flag's value; fails on a second value of a flag not repeatable.
  void store(const FlagSpec& s, const std::string& value);
  std::string usage_;
  std::vector<FlagSpec> specs_;
  std::vector<std::string> positional_names_;
  std::map<std::string, std::vector<std::string>> values_;  // more than one: a repeatable flag
  std::vector<std::string> positional_;
};

// "a.b=1,c.d=x" -> {"a.b=1", "c.d=x"} (the --set flag of the config-driven
// tools). A comma followed by anything but "section.key=" continues the value:
// "d.seeds=0,1,2,r.device=cuda" -> {"d.seeds=0,1,2", "r.device=cuda"}.
std::vector<std::string> split_overrides(const std::string& text);

class Config;
// The config-driven tools' --set flag: repeatable, its values split by
// split_overrides. `example` shows an assignment or two, e.g.
// "train.epochs=10[,run.device=cuda]".
FlagSpec config_override_flag(const std::string& example);
// Applies every --set assignment to `config`, in the order given. Each --set
// starts with an assignment: a value there is never taken for the rest of
// the previous --set's list.
void apply_config_overrides(const Flags& flags, Config& config);

// For an output file: creates its missing parent folders and fails, naming the
// output (`name`: how the user gave it, "flag --out" or a positional "OUTPUT")
// and the path, when it cannot be written there (the path is a folder, a
// parent is a file, the folder is read-only). A tool calls it before its long
// work, not when it writes the file at the end.
void prepare_output_file(const std::string& name, const std::string& path);

// Runs body() and turns an engine::Error, or a std::filesystem error (which
// names its path), into one message on stderr and exit code 1 (a tool's main
// is `return run_tool("tool", tool_main, argc, argv);`).
int run_tool(const char* tool, int (*body)(int, char**), int argc, char** argv);

}  // namespace engine
