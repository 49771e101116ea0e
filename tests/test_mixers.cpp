// Token mixers: shapes, parameter budgets against attention, numerical
// gradients of whole mixers in float64, causality of the forward-only scans
// and global reach of the bidirectional ones, and the spec parser.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "engine/ops/ops.h"
#include "layers/mixers/factory.h"
#include "tests/expect_error.h"
#include "tests/gradcheck.h"

namespace engine {
namespace {

using testing::expect_error_mentioning;

std::unique_ptr<TokenMixer> build(const std::string& spec_text, int64_t dim, uint64_t seed = 1) {
  Rng rng(seed);
  MixerSpec defaults;
  defaults.heads = 4;
  return make_mixer(parse_mixer_spec(spec_text, defaults), dim, rng);
}

NamedTensors parameters(TokenMixer& mixer) {
  NamedTensors params;
  mixer.visit("attn", [&](const std::string& name, Tensor& p) { params.emplace_back(name, p); });
  return params;
}

int64_t count_parameters(TokenMixer& mixer) {
  int64_t total = 0;
  for (const auto& [name, p] : parameters(mixer)) total += p.numel();
  return total;
}

// Converts every parameter to a float64 leaf that requires grad. With
// `jitter`, adds uniform noise in [-0.5, 0.5]: at init many gradients are tiny
// (0.02-scale weights), too small for a gradient check to notice an error.
void to_f64(TokenMixer& mixer, Rng* jitter = nullptr) {
  mixer.visit("", [&](const std::string&, Tensor& p) {
    p = p.to(DType::F64);
    if (jitter) p = add(p, Tensor::uniform(p.shape(), *jitter, -0.5, 0.5, DType::F64));
    p.set_requires_grad(true);
  });
}

Tensor run(TokenMixer& mixer, const Tensor& x) { return mixer.forward(x, ForwardContext{}, nullptr); }

// Max |a - b| over the tokens [begin, end) of two [B, N, D] outputs.
double token_difference(const Tensor& a, const Tensor& b, int64_t begin, int64_t end) {
  Tensor difference = abs(sub(narrow(a, 1, begin, end - begin), narrow(b, 1, begin, end - begin)));
  std::vector<double> values = difference.to_doubles();
  return *std::max_element(values.begin(), values.end());
}

const std::vector<std::string> kSequenceMixers = {"gated_rnn", "mamba", "conv"};

TEST(Mixer, OutputShapes) {
  Rng rng(1);
  Tensor x = Tensor::randn({2, 7, 16}, rng);
  for (const std::string& kind : mixer_kinds()) {
    auto mixer = build(kind, 16);
    EXPECT_EQ(mixer->kind(), kind);
    EXPECT_EQ(run(*mixer, x).shape(), x.shape()) << kind;
  }
}

TEST(Mixer, IdentityOutputsZeros) {
  auto mixer = build("identity", 8);
  Rng rng(2);
  Tensor out = run(*mixer, Tensor::randn({2, 3, 8}, rng));
  EXPECT_EQ(out.to_doubles(), std::vector<double>(48, 0.0));
  EXPECT_EQ(count_parameters(*mixer), 0);
  // In a block: the residual unchanged, x ignored; packed tokens alone give zeros.
  const Tensor x = Tensor::randn({5, 8}, rng), residual = Tensor::randn({5, 8}, rng);
  EXPECT_EQ(mixer->forward_plus(x, residual, {}).to_doubles(), residual.to_doubles());
  EXPECT_EQ(mixer->forward_packed(x, PaddedLayout{}, {}, residual).to_doubles(), residual.to_doubles());
  EXPECT_EQ(mixer->forward_packed(x, PaddedLayout{}, {}, Tensor()).to_doubles(), std::vector<double>(40, 0.0));
}

// The replacements must be cheaper than the attention they replace. Mamba's
// per-direction SSM parameters (x_proj, A_log: ~2 * 36 * D) only fit under
// attention's 4D^2 + 4D from D ~ 100 on, so it is checked at ViT-Tiny's 192.
TEST(Mixer, FewerParametersThanAttention) {
  for (int64_t dim : {64, 192}) {
    const int64_t attention = count_parameters(*build("attention", dim));
    EXPECT_EQ(attention, 4 * dim * dim + 4 * dim);
    std::string table = fmt::format("D={}: attention {}", dim, attention);
    for (const std::string kind : {"gated_rnn", "mamba", "identity", "mlp", "conv"}) {
      const int64_t count = count_parameters(*build(kind, dim));
      table += fmt::format(", {} {}", kind, count);
      if (kind != "mamba" || dim == 192) {
        EXPECT_LT(count, attention) << kind << " at D=" << dim;
      }
    }
    std::printf("%s\n", table.c_str());
  }
}

TEST(Mixer, ParameterNames) {
  std::map<std::string, Shape> names;
  for (const auto& [name, p] : parameters(*build("mamba", 32))) names[name] = p.shape();
  EXPECT_EQ(names.at("attn.in_proj.weight"), (Shape{64, 32}));
  EXPECT_EQ(names.at("attn.conv1d.weight"), (Shape{32, 1, 4}));
  EXPECT_EQ(names.at("attn.x_proj.weight"), (Shape{2 + 32, 32}));  // dt_rank 2, 2 x d_state 16
  EXPECT_EQ(names.at("attn.dt_proj_b.bias"), (Shape{32}));
  EXPECT_EQ(names.at("attn.A_b_log"), (Shape{32, 16}));
  EXPECT_EQ(names.at("attn.D_b"), (Shape{32}));
  EXPECT_EQ(names.at("attn.out_proj.weight"), (Shape{32, 32}));
  EXPECT_EQ(names.size(), 1 + 2 * 7 + 1u);
  EXPECT_EQ(parameters(*build("mamba:direction=forward", 32)).size(), 1 + 7 + 1u);
  std::vector<std::string> rnn;
  for (const auto& [name, p] : parameters(*build("gated_rnn", 32))) rnn.push_back(name);
  EXPECT_EQ(rnn, (std::vector<std::string>{"attn.in_proj.weight", "attn.in_proj.bias", "attn.out_proj.weight",
                                           "attn.out_proj.bias"}));
}

TEST(Mixer, MambaInit) {
  for (const auto& [name, p] : parameters(*build("mamba", 32))) {
    if (name == "attn.A_log") {
      EXPECT_NEAR(p.to_doubles()[16 + 15], std::log(16.0), 1e-6);  // channel 1, state 15: A = -16
    }
    if (name == "attn.D") {
      EXPECT_EQ(p.to_doubles(), std::vector<double>(32, 1.0));
    }
    if (name != "attn.dt_proj.bias") continue;
    for (double b : p.to_doubles()) {
      const double dt = std::log1p(std::exp(b));  // softplus
      EXPECT_GE(dt, 1e-3 * 0.999);
      EXPECT_LE(dt, 1e-1 * 1.001);
    }
  }
}

TEST(Mixer, Gradients) {
  Rng rng(3);
  Tensor x = testing::random_leaf({2, 5, 8}, rng);
  for (const std::string spec : {"gated_rnn", "gated_rnn:direction=forward", "mamba:d_state=4",
                                  "mamba:d_state=4,direction=forward", "mlp", "conv", "conv:direction=forward"}) {
    SCOPED_TRACE(spec);
    auto mixer = build(spec, 8);
    to_f64(*mixer, &rng);
    std::vector<Tensor> inputs{x};
    for (const auto& [name, p] : parameters(*mixer)) inputs.push_back(p);
    testing::expect_gradients_match([&](const auto& in) { return run(*mixer, in[0]); }, inputs);
  }
}

// A mixer in float64 (its outputs are small at init: the checks below look
// for any dependence, and computations that ignore a token are bitwise equal).
std::unique_ptr<TokenMixer> build_f64(const std::string& spec_text, int64_t dim) {
  auto mixer = build(spec_text, dim);
  to_f64(*mixer);
  return mixer;
}

// x [2, 6, 8] in float64 with `count` tokens from `first` on redrawn.
Tensor redraw_tokens(const Tensor& x, int64_t first, int64_t count, Rng& rng) {
  Tensor y = x.clone();
  copy_into(narrow(y, 1, first, count), Tensor::randn({x.size(0), count, x.size(2)}, rng, DType::F64));
  return y;
}

// Forward-only: token t depends on tokens <= t only.
TEST(Mixer, ForwardOnlyIsCausal) {
  Rng rng(4);
  Tensor x = Tensor::randn({2, 6, 8}, rng, DType::F64);
  Tensor changed = redraw_tokens(x, 3, 3, rng);
  for (const std::string& kind : kSequenceMixers) {
    auto mixer = build_f64(kind + ":direction=forward", 8);
    Tensor before = run(*mixer, x), after = run(*mixer, changed);
    EXPECT_EQ(token_difference(before, after, 0, 3), 0.0) << kind;
    EXPECT_GT(token_difference(before, after, 3, 6), 0.0) << kind;
  }
}

// Bidirectional scans: the class token (first) sees the last token. The conv
// mixer is local; its 'same' padding lets token 0 see token 1.
TEST(Mixer, BidirectionalReachesTheClassToken) {
  Rng rng(5);
  Tensor x = Tensor::randn({2, 6, 8}, rng, DType::F64);
  Tensor last_changed = redraw_tokens(x, 5, 1, rng), second_changed = redraw_tokens(x, 1, 1, rng);
  for (const std::string kind : {"gated_rnn", "mamba"}) {
    auto mixer = build_f64(kind, 8);
    EXPECT_GT(token_difference(run(*mixer, x), run(*mixer, last_changed), 0, 1), 0.0) << kind;
  }
  auto conv = build_f64("conv", 8);
  EXPECT_GT(token_difference(run(*conv, x), run(*conv, second_changed), 0, 1), 0.0);
  EXPECT_EQ(token_difference(run(*conv, x), run(*conv, last_changed), 0, 1), 0.0);
}

TEST(Mixer, ParseSpec) {
  MixerSpec spec = parse_mixer_spec(" mamba : d_state=8, expand=2,conv_kernel=3 ,direction=forward");
  EXPECT_EQ(spec.kind, "mamba");
  EXPECT_EQ(spec.d_state, 8);
  EXPECT_EQ(spec.expand, 2);
  EXPECT_EQ(spec.conv_kernel, 3);
  EXPECT_FALSE(spec.bidirectional);
  MixerSpec defaults;
  defaults.heads = 3;
  defaults.qkv_bias = false;
  spec = parse_mixer_spec("attention", defaults);
  EXPECT_EQ(spec.heads, 3);
  EXPECT_FALSE(spec.qkv_bias);
  EXPECT_EQ(parse_mixer_spec("attention:heads=6,qkv_bias=true", defaults).heads, 6);
  EXPECT_EQ(parse_mixer_spec("gated_rnn:width=24").width, 24);
  EXPECT_TRUE(parse_mixer_spec("gated_rnn").bidirectional);
  EXPECT_EQ(count_parameters(*build("gated_rnn:width=24", 16)), 4 * 24 * 16 + 3 * 24 + 16);
  EXPECT_EQ(count_parameters(*build("mlp:width=24", 16)), 2 * 24 * 16 + 24 + 16);
  EXPECT_EQ(count_parameters(*build("conv:conv_kernel=7", 16)), 16 * 7 + 16 + 16 * 16 + 16);
}

TEST(Mixer, SpecErrors) {
  expect_error_mentioning([] { parse_mixer_spec("transformer"); },
                          {"unknown token mixer 'transformer'", "attention, gated_rnn, mamba, identity, mlp, conv"});
  expect_error_mentioning([] { parse_mixer_spec("gated_rnn:d_state=4"); }, {"'d_state'", "gated_rnn", "width"});
  expect_error_mentioning([] { parse_mixer_spec("identity:width=4"); }, {"none"});
  expect_error_mentioning([] { parse_mixer_spec("mamba:d_state=big"); }, {"d_state", "integer", "big"});
  expect_error_mentioning([] { parse_mixer_spec("mamba:direction=backward"); }, {"bidirectional or forward"});
  expect_error_mentioning([] { parse_mixer_spec("mamba:expand"); }, {"key=value"});
  expect_error_mentioning([] { parse_mixer_spec("gated_rnn:width=64, width=96"); }, {"width", "twice"});
  Rng rng(6);
  expect_error_mentioning([&] { make_mixer(parse_mixer_spec("attention"), 8, rng); }, {"heads"});
  expect_error_mentioning([&] { make_mixer(parse_mixer_spec("conv:conv_kernel=4"), 8, rng); }, {"odd", "4"});
  expect_error_mentioning([&] { make_mixer(parse_mixer_spec("gated_rnn:width=-2"), 8, rng); }, {"width", "-2"});
  expect_error_mentioning([&] { make_mixer(parse_mixer_spec("mamba:d_state=0"), 8, rng); }, {"d_state"});
  expect_error_mentioning([&] { make_mixer(parse_mixer_spec("mamba:conv_kernel=-1"), 8, rng); },
                          {"conv_kernel", "-1"});
  expect_error_mentioning([&] { make_mixer(parse_mixer_spec("mlp:width=-3"), 8, rng); }, {"width", "-3"});
}

// ------------------------------------------------------------------ references
// Each sequence mixer against its definition written out in loops over one
// image's [L, C] rows in float64 (scan.h's recurrences, PyTorch's Conv1d),
// from the mixer's own named parameters: which projection half is the gate,
// which direction runs reversed, what is summed and gated.

using Rows = std::vector<double>;  // [L, C] row-major

// y [L, out] = x [L, in] w^T + b.
Rows ref_linear(const Rows& x, int64_t in, const Rows& w, const Rows* b) {
  const int64_t length = static_cast<int64_t>(x.size()) / in, out = static_cast<int64_t>(w.size()) / in;
  Rows y(static_cast<size_t>(length * out));
  for (int64_t t = 0; t < length; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double v = b ? (*b)[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) v += w[o * in + i] * x[t * in + i];
      y[t * out + o] = v;
    }
  return y;
}

// Columns [first, first + count) of x [L, width].
Rows columns(const Rows& x, int64_t width, int64_t first, int64_t count) {
  Rows y;
  for (size_t t = 0; t < x.size() / width; ++t)
    for (int64_t c = 0; c < count; ++c) y.push_back(x[t * width + first + c]);
  return y;
}

Rows flip(const Rows& x, int64_t width) {
  Rows y;
  for (int64_t t = static_cast<int64_t>(x.size()) / width - 1; t >= 0; --t)
    for (int64_t c = 0; c < width; ++c) y.push_back(x[t * width + c]);
  return y;
}

double silu(double v) { return v / (1 + std::exp(-v)); }
double sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

// PyTorch's depthwise Conv1d (cross-correlation), zero padded: pad_left zeros before the sequence.
Rows ref_conv(const Rows& x, int64_t channels, const Rows& w, const Rows& b, int64_t pad_left) {
  const int64_t length = static_cast<int64_t>(x.size()) / channels, taps = static_cast<int64_t>(w.size()) / channels;
  Rows y(x.size());
  for (int64_t t = 0; t < length; ++t)
    for (int64_t c = 0; c < channels; ++c) {
      double v = b[c];
      for (int64_t j = 0; j < taps; ++j) {
        const int64_t s = t + j - pad_left;
        if (s >= 0 && s < length) v += w[c * taps + j] * x[s * channels + c];
      }
      y[t * channels + c] = v;
    }
  return y;
}

std::map<std::string, Rows> values_of(TokenMixer& mixer) {
  std::map<std::string, Rows> values;
  for (const auto& [name, p] : parameters(mixer)) values[name.substr(5)] = p.to_doubles();  // without "attn."
  return values;
}

// One Mamba direction (suffix "" or "_b") over xi [L, C], forward in time.
Rows ref_mamba_direction(std::map<std::string, Rows>& v, const std::string& suffix, const Rows& xi, int64_t channels) {
  const Rows& conv_w = v["conv1d" + suffix + ".weight"];
  const int64_t taps = static_cast<int64_t>(conv_w.size()) / channels;
  Rows xc = ref_conv(xi, channels, conv_w, v["conv1d" + suffix + ".bias"], taps - 1);
  for (double& e : xc) e = silu(e);
  const Rows& a_log = v["A" + suffix + "_log"];
  const int64_t states = static_cast<int64_t>(a_log.size()) / channels;
  const Rows& dt_w = v["dt_proj" + suffix + ".weight"];
  const int64_t rank = static_cast<int64_t>(dt_w.size()) / channels, width = rank + 2 * states;
  const Rows x_dbl = ref_linear(xc, channels, v["x_proj" + suffix + ".weight"], nullptr);
  Rows dt = ref_linear(columns(x_dbl, width, 0, rank), rank, dt_w, &v["dt_proj" + suffix + ".bias"]);
  for (double& e : dt) e = std::log1p(std::exp(e));  // softplus
  const Rows& d = v["D" + suffix];
  const int64_t length = static_cast<int64_t>(xi.size()) / channels;
  Rows h(static_cast<size_t>(channels * states), 0.0), y(xi.size());
  for (int64_t t = 0; t < length; ++t)
    for (int64_t c = 0; c < channels; ++c) {
      const double step = dt[t * channels + c], input = xc[t * channels + c];
      double out = d[c] * input;
      for (int64_t s = 0; s < states; ++s) {
        double& state = h[c * states + s];
        state = std::exp(-step * std::exp(a_log[c * states + s])) * state + step * x_dbl[t * width + rank + s] * input;
        out += x_dbl[t * width + rank + states + s] * state;
      }
      y[t * channels + c] = out;
    }
  return y;
}

// gated_rnn's scan over u and the gate's logits [L, W], forward in time.
Rows ref_gated_scan(const Rows& u, const Rows& gate, int64_t width) {
  Rows h(u.size()), state(static_cast<size_t>(width), 0.0);
  for (size_t i = 0; i < u.size(); ++i) {
    const double a = sigmoid(gate[i]);
    double& s = state[i % width];
    s = a * s + (1 - a) * u[i];
    h[i] = s;
  }
  return h;
}

// The mixer's output for one image x [L, dim].
Rows ref_mixer(const std::string& kind, bool bidirectional, std::map<std::string, Rows>& v, const Rows& x, int64_t dim) {
  Rows gated;
  if (kind == "conv") {
    const int64_t taps = static_cast<int64_t>(v["conv.weight"].size()) / dim;
    const Rows mixed = ref_conv(x, dim, v["conv.weight"], v["conv.bias"], bidirectional ? taps / 2 : taps - 1);
    return ref_linear(mixed, dim, v["proj.weight"], &v["proj.bias"]);
  }
  if (kind == "gated_rnn") {
    const Rows& in_w = v["in_proj.weight"];
    const int64_t width = static_cast<int64_t>(in_w.size()) / dim / 3;
    const Rows p = ref_linear(x, dim, in_w, &v["in_proj.bias"]);
    const Rows u = columns(p, 3 * width, 0, width), gate = columns(p, 3 * width, width, width);
    const Rows z = columns(p, 3 * width, 2 * width, width);
    Rows h = ref_gated_scan(u, gate, width);
    if (bidirectional) {
      const Rows back = flip(ref_gated_scan(flip(u, width), flip(gate, width), width), width);
      for (size_t i = 0; i < h.size(); ++i) h[i] += back[i];
    }
    for (size_t i = 0; i < h.size(); ++i) h[i] *= silu(z[i]);
    return ref_linear(h, width, v["out_proj.weight"], &v["out_proj.bias"]);
  }
  // mamba
  const Rows& in_w = v["in_proj.weight"];
  const int64_t inner = static_cast<int64_t>(in_w.size()) / dim / 2;
  const Rows p = ref_linear(x, dim, in_w, nullptr);
  const Rows xi = columns(p, 2 * inner, 0, inner), z = columns(p, 2 * inner, inner, inner);
  Rows y = ref_mamba_direction(v, "", xi, inner);
  if (bidirectional) {
    const Rows back = flip(ref_mamba_direction(v, "_b", flip(xi, inner), inner), inner);
    for (size_t i = 0; i < y.size(); ++i) y[i] += back[i];
  }
  for (size_t i = 0; i < y.size(); ++i) y[i] *= silu(z[i]);
  return ref_linear(y, inner, v["out_proj.weight"], nullptr);
}

TEST(Mixer, SequenceMixersMatchTheirDefinitions) {
  const int64_t batch = 2, length = 6, dim = 8;
  Rng rng(7);
  const Tensor x = Tensor::randn({batch, length, dim}, rng, DType::F64);
  const std::vector<double> xs = x.to_doubles();
  for (const std::string& kind : kSequenceMixers) {
    for (const bool bidirectional : {true, false}) {
      const std::string spec = kind + (kind == "mamba" ? ":d_state=4," : ":") +
                               (bidirectional ? "direction=bidirectional" : "direction=forward");
      SCOPED_TRACE(spec);
      auto mixer = build(spec, dim);
      to_f64(*mixer, &rng);  // off the init: unit D, zero biases, the same A in every channel
      std::map<std::string, Rows> values = values_of(*mixer);
      const std::vector<double> actual = run(*mixer, x).to_doubles();
      ASSERT_EQ(actual.size(), xs.size());
      for (int64_t b = 0; b < batch; ++b) {
        const Rows image(xs.begin() + b * length * dim, xs.begin() + (b + 1) * length * dim);
        const Rows expected = ref_mixer(kind, bidirectional, values, image, dim);
        for (int64_t i = 0; i < length * dim; ++i) {
          ASSERT_NEAR(actual[b * length * dim + i], expected[i], 1e-9 * std::max(1.0, std::abs(expected[i])))
              << "image " << b << " token " << i / dim << " channel " << i % dim;
        }
      }
    }
  }
}

}  // namespace
}  // namespace engine
