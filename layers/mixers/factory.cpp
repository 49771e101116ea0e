#include "layers/mixers/factory.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "layers/attention.h"
#include "layers/mixers/conv_mixer.h"
#include "layers/mixers/gated_rnn.h"
#include "layers/mixers/identity.h"
#include "layers/mixers/mamba.h"
#include "layers/mixers/mlp_mixer.h"

namespace engine {

namespace {

struct KindKeys {
  std::string kind;
  std::vector<std::string> keys;  // the spec keys that apply to it
};

const std::vector<KindKeys>& kind_table() {
  static const std::vector<KindKeys> table = {
      {"attention", {"heads", "qkv_bias"}},
      {"gated_rnn", {"width", "direction"}},
      {"mamba", {"d_state", "expand", "conv_kernel", "direction"}},
      {"identity", {}},
      {"mlp", {"width"}},
      {"conv", {"conv_kernel", "direction"}},
  };
  return table;
}

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

// One `key=value` of spec `text`, parsed into spec.
void set_option(MixerSpec& spec, const std::string& text, const std::string& key, const std::string& value) {
  const auto integer = [&]() {
    size_t used = 0;
    int64_t result = 0;
    try {
      result = std::stoll(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(!value.empty() && used == value.size(), "mixer spec '{}': {} must be an integer, got '{}'", text, key,
          value);
    return result;
  };
  const auto choice = [&](const char* yes, const char* no) {
    check(value == yes || value == no, "mixer spec '{}': {} must be {} or {}, got '{}'", text, key, yes, no, value);
    return value == yes;
  };
  if (key == "heads") spec.heads = integer();
  else if (key == "qkv_bias") spec.qkv_bias = choice("true", "false");
  else if (key == "width") spec.width = integer();
  else if (key == "d_state") spec.d_state = integer();
  else if (key == "expand") spec.expand = integer();
  else if (key == "conv_kernel") spec.conv_kernel = integer();
  else if (key == "direction") spec.bidirectional = choice("bidirectional", "forward");
}

[[noreturn]] void fail_unknown_kind(const std::string& kind) {
  fail("unknown token mixer '{}' (known: {})", kind, fmt::join(mixer_kinds(), ", "));
}

// A size given as 0 takes the kind's default.
int64_t or_default(int64_t value, int64_t fallback) { return value == 0 ? fallback : value; }

}  // namespace

std::vector<std::string> mixer_kinds() {
  std::vector<std::string> kinds;
  for (const KindKeys& entry : kind_table()) kinds.push_back(entry.kind);
  return kinds;
}

MixerSpec parse_mixer_spec(const std::string& text, const MixerSpec& defaults) {
  MixerSpec spec = defaults;
  const size_t colon = text.find(':');
  spec.kind = trim(text.substr(0, colon));
  const auto& table = kind_table();
  const auto entry = std::find_if(table.begin(), table.end(), [&](const KindKeys& k) { return k.kind == spec.kind; });
  if (entry == table.end()) fail_unknown_kind(spec.kind);
  if (colon == std::string::npos) return spec;
  std::string options = text.substr(colon + 1);
  std::vector<std::string> seen;  // a key given twice is a typo, not "the last one wins"
  for (size_t start = 0; start <= options.size();) {
    const size_t end = std::min(options.find(',', start), options.size());
    const std::string item = trim(options.substr(start, end - start));
    start = end + 1;
    const size_t equals = item.find('=');
    check(equals != std::string::npos, "mixer spec '{}': expected key=value, got '{}'", text, item);
    const std::string key = trim(item.substr(0, equals)), value = trim(item.substr(equals + 1));
    const bool applies = std::find(entry->keys.begin(), entry->keys.end(), key) != entry->keys.end();
    check(applies, "mixer spec '{}': '{}' is not an option of {} (its options: {})", text, key, spec.kind,
          entry->keys.empty() ? "none" : fmt::format("{}", fmt::join(entry->keys, ", ")));
    check(std::find(seen.begin(), seen.end(), key) == seen.end(), "mixer spec '{}': {} is given twice", text, key);
    seen.push_back(key);
    set_option(spec, text, key, value);
  }
  return spec;
}

std::unique_ptr<TokenMixer> make_mixer(const MixerSpec& spec, int64_t dim, Rng& rng) {
  if (spec.kind == "attention") return std::make_unique<Attention>(dim, spec.heads, spec.qkv_bias, rng);
  if (spec.kind == "gated_rnn") {
    return std::make_unique<GatedRnn>(dim, or_default(spec.width, std::max<int64_t>(1, dim / 2)), spec.bidirectional,
                                      rng);
  }
  if (spec.kind == "mamba") {
    return std::make_unique<Mamba>(dim, spec.d_state, spec.expand, or_default(spec.conv_kernel, 4), spec.bidirectional,
                                   rng);
  }
  if (spec.kind == "identity") return std::make_unique<IdentityMixer>();
  if (spec.kind == "mlp") return std::make_unique<MlpMixer>(dim, or_default(spec.width, dim), rng);
  if (spec.kind == "conv") {
    return std::make_unique<ConvMixer>(dim, or_default(spec.conv_kernel, 3), spec.bidirectional, rng);
  }
  fail_unknown_kind(spec.kind);
}

}  // namespace engine
