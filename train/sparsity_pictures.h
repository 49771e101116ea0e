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

// One row of tiles: `input`, then one tile per map (grid x grid values, row-major, one
// block per patch) in viridis colours blended over the image, `scale` shown yellow
// (0: each map's own maximum). Tiles are at least 128 pixels (inputs are upscaled by
// an integer factor).
data::Image image_with_maps(const data::Image& input, const std::vector<std::vector<float>>& maps, int64_t grid,
                            double scale = 0);

// The input image, then one tile per layer with the class token's attention.
data::Image cls_attention_picture(const ClsAttentionMaps& maps, int64_t grid);

// Image b of a normalised [B, 3, H, W] float32 CPU batch back to 8-bit RGB.
data::Image to_rgb_image(const Tensor& images, int64_t b, const Preprocess& preprocess);

// "3, 5, 11" (fmt::join over int64 trips a GCC false positive in fmt 9's headers).
std::string join_indices(const std::vector<int64_t>& indices, const std::string& separator);

// A labelled scatter plot (SVG), axes spanning the points' ranges. A point
// with y_err > 0 gets an error bar y +- y_err (within the range too).
struct ScatterPoint {
  double x = 0, y = 0;
  std::string label;
  double y_err = 0;
};
std::string scatter_svg(const std::vector<ScatterPoint>& points, const std::string& x_label,
                        const std::string& y_label);

std::string index_html(const SparsityAnalysis& analysis, const SparsityRunInfo& info);

}  // namespace engine
