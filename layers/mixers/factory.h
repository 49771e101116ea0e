// Token mixers for a block's attention branch, built from a spec. Every mixer
// maps the block's LN1 output [B, N, D] to [B, N, D] (added to the residual).
//
// Token order: the ViT's sequence as it is, prefix tokens (class, then DeiT's
// distillation token) first, then the patches row-major. The sequential mixers
// (gated_rnn, mamba) scan first-to-last and, by default, also last-to-first,
// summing the two: the class token, first in the forward scan, would otherwise
// see only itself; with the backward scan it sees every patch. direction=forward
// keeps only the first-to-last scan (a causal mixer, for ablations).
//
// Spec text (the entries of VitConfig::mixers): kind[:key=value,...], e.g.
//   attention:heads=3            gated_rnn:width=96,direction=forward
//   mamba:d_state=16,expand=1,conv_kernel=4    mlp:width=192    conv:conv_kernel=7    identity
// Keys per kind: attention heads, qkv_bias; gated_rnn width, direction;
// mamba d_state, expand, conv_kernel, direction; mlp width; conv conv_kernel,
// direction; identity none. A key that does not apply to the kind is an error.
//
// Parameter names, under the block's prefix (e.g. blocks.3.attn.in_proj.weight):
//   attention  qkv.{weight,bias} proj.{weight,bias}                    (timm)
//   gated_rnn  in_proj.{weight,bias} out_proj.{weight,bias}            (gated_rnn.h)
//   mamba      in_proj.weight conv1d.{weight,bias} x_proj.weight dt_proj.{weight,bias}
//              A_log D, the same with _b for the backward scan (conv1d_b..., A_b_log, D_b),
//              out_proj.weight                                          (Vision Mamba; mamba.h)
//   mlp        fc1.{weight,bias} fc2.{weight,bias}
//   conv       conv.{weight,bias} proj.{weight,bias}
//   identity   none
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layers/token_mixer.h"

namespace engine {

struct MixerSpec {
  std::string kind = "attention";
  int64_t heads = 0;          // attention: number of heads (required)
  bool qkv_bias = true;       // attention
  int64_t width = 0;          // gated_rnn: recurrence width (0: D / 2); mlp: hidden width (0: D)
  int64_t d_state = 16;       // mamba: state size per channel
  int64_t expand = 1;         // mamba: d_inner = expand * D
  int64_t conv_kernel = 0;    // mamba: causal conv taps (0: 4); conv: odd kernel size (0: 3)
  bool bidirectional = true;  // gated_rnn, mamba, conv: also scan last-to-first ('same' conv)
};

// The known kinds, in a fixed order.
std::vector<std::string> mixer_kinds();

// Parses spec text; keys it does not set keep their value in `defaults` (a
// ViT passes its heads and qkv_bias there). Unknown kinds, unknown keys and bad
// values are errors naming what is known.
MixerSpec parse_mixer_spec(const std::string& text, const MixerSpec& defaults = {});

// A freshly initialised mixer for tokens of width dim (float32 parameters).
std::unique_ptr<TokenMixer> make_mixer(const MixerSpec& spec, int64_t dim, Rng& rng);

}  // namespace engine
