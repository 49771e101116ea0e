// The sparsity report's pictures: a per-layer bar chart of entropy and k90 (SVG),
// the class-token attention heatmaps (PNG) and index.html, which shows them with
// the per-layer table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "train/sparsity_report.h"

namespace engine {

// Two panels (entropy, k90), one bar per layer, each with the uniform row's value as a
// dashed reference line.
std::string layers_svg(const SparsityAnalysis& analysis);

// "cls_attention_img<k>.png"
std::string heatmap_file_name(size_t k);

// One row of tiles: the input image, then one tile per layer with the class token's
// attention (one block per patch, each map scaled to its own maximum, viridis colours)
// blended over the image. Tiles are at least 128 pixels (inputs are upscaled by an
// integer factor).
data::Image cls_attention_picture(const ClsAttentionMaps& maps, int64_t grid);

// "3, 5, 11" (fmt::join over int64 trips a GCC false positive in fmt 9's headers).
std::string join_indices(const std::vector<int64_t>& indices, const std::string& separator);

std::string index_html(const SparsityAnalysis& analysis, const SparsityRunInfo& info);

}  // namespace engine
