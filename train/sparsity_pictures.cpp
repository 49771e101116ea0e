#include "train/sparsity_pictures.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "data/transforms.h"

namespace engine {

namespace {

// ---- bar chart ----

constexpr int kWidth = 760, kPanelHeight = 260;
constexpr int kLeft = 60, kRight = 110, kTop = 34, kBottom = 44;  // plot margins inside a panel

// A round tick step (1, 2 or 5 times a power of ten) giving about five ticks up to max_value.
double tick_step(double max_value) {
  const double raw = std::max(max_value, 1e-9) / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

std::string svg_panel(const std::string& title, const std::vector<double>& values, double uniform,
                      const char* value_format, const char* colour, int top) {
  const double plot_w = kWidth - kLeft - kRight, plot_h = kPanelHeight - kTop - kBottom;
  const double base = top + kTop + plot_h;  // y of the value 0
  const double largest = std::max(uniform, *std::max_element(values.begin(), values.end()));
  const double step = tick_step(largest);
  const double y_max = step * std::ceil(largest / step);
  const auto y_of = [&](double v) { return base - v / y_max * plot_h; };

  std::string svg = fmt::format("<text x=\"{}\" y=\"{}\" class=\"title\">{}</text>\n", kLeft, top + 20, title);
  for (int t = 0; t * step <= y_max * (1 + 1e-9); ++t) {
    const double y = y_of(t * step);
    svg += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" class=\"grid\"/>", kLeft, kLeft + plot_w, y, y);
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}</text>\n", kLeft - 6, y + 4, t * step);
  }
  const double slot = plot_w / static_cast<double>(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double x = kLeft + slot * i, y = y_of(values[i]);
    svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>", x + 0.15 * slot,
                       y, 0.7 * slot, base - y, colour);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" class=\"value\">{}</text>",
                       x + slot / 2, y - 4, fmt::format(fmt::runtime(value_format), values[i]));
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x + slot / 2, base + 16, i);
  }
  svg += fmt::format("<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2:.1f}\" class=\"axis\"/>", kLeft, top + kTop, base);
  svg += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" class=\"axis\"/>\n", kLeft,
                     kLeft + plot_w, base);
  const double y_uniform = y_of(uniform);
  svg += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" class=\"uniform\"/>", kLeft,
                     kLeft + plot_w, y_uniform);
  svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\">uniform ({})</text>\n", kLeft + plot_w + 6, y_uniform + 4,
                     fmt::format(fmt::runtime(value_format), uniform));
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">layer</text>\n", kLeft + plot_w / 2,
                     base + 34);
  return svg;
}

// ---- heatmaps ----

// matplotlib's viridis at nine evenly spaced points, interpolated linearly.
std::array<uint8_t, 3> viridis(double v) {
  static const uint8_t stops[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                      {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
  const double x = std::clamp(v, 0.0, 1.0) * 8;
  const int i = std::min(static_cast<int>(x), 7);
  const double f = x - i;
  std::array<uint8_t, 3> rgb{};
  for (int c = 0; c < 3; ++c) rgb[c] = static_cast<uint8_t>(std::lround(stops[i][c] * (1 - f) + stops[i + 1][c] * f));
  return rgb;
}

void paste(data::Image& canvas, const data::Image& tile, int left) {
  for (int y = 0; y < tile.height; ++y) {
    for (int x = 0; x < tile.width; ++x) {
      for (int c = 0; c < 3; ++c) canvas.at(y, left + x, c) = tile.at(y, x, c);
    }
  }
}

// The map (grid x grid, `scale` or else its maximum shown yellow) in viridis over `image`.
data::Image blend_heatmap(const data::Image& image, const std::vector<float>& map, int64_t grid, double scale) {
  constexpr double kOpacity = 0.6;
  const double largest = scale > 0 ? scale : *std::max_element(map.begin(), map.end());
  data::Image out = image;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const int64_t patch = y * grid / image.height * grid + x * grid / image.width;
      const auto colour = viridis(largest > 0 ? map[patch] / largest : 0.0);
      for (int c = 0; c < 3; ++c) {
        out.at(y, x, c) = static_cast<uint8_t>(std::lround((1 - kOpacity) * image.at(y, x, c) + kOpacity * colour[c]));
      }
    }
  }
  return out;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string html_table(const SparsityAccumulator& stats) {
  std::string html = "<table>\n<tr><th>layer</th>";
  for (const auto& [name, field] : SparsityMetrics::fields()) html += fmt::format("<th>{}</th>", name);
  if (stats.has_cls()) html += "<th>cls entropy</th><th>cls k90</th><th>cls top1_mass</th>";
  html += "</tr>\n";
  for (int64_t i = 0; i < stats.layers(); ++i) {
    const SparsityMetrics m = stats.layer(i), cls = stats.cls(i);
    html += fmt::format("<tr><td>{}</td>", i);
    for (const auto& [name, field] : SparsityMetrics::fields()) html += fmt::format("<td>{:.3f}</td>", m.*field);
    if (stats.has_cls()) {
      html += fmt::format("<td>{:.3f}</td><td>{:.3f}</td><td>{:.3f}</td>", cls.entropy, cls.k90, cls.top1_mass);
    }
    html += "</tr>\n";
  }
  return html + "</table>\n";
}

}  // namespace

std::string layers_svg(const SparsityAnalysis& analysis) {
  const SparsityAccumulator& stats = analysis.stats();
  std::vector<double> entropy, k90;
  for (int64_t i = 0; i < stats.layers(); ++i) {
    entropy.push_back(stats.layer(i).entropy);
    k90.push_back(stats.layer(i).k90);
  }
  const int64_t n = analysis.config().num_tokens();
  const std::vector<double> uniform_row(n, 1.0 / static_cast<double>(n));
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<style>.title{{font-size:15px;font-weight:bold}} .value{{font-size:10px}} .grid{{stroke:#ddd}} "
      ".axis{{stroke:#000}} .uniform{{stroke:#c33;stroke-dasharray:5,4}}</style>\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      kWidth, 2 * kPanelHeight);
  svg += svg_panel(fmt::format("Attention entropy per layer (nats, mean over rows; N = {} tokens)", n), entropy,
                   std::log(static_cast<double>(n)), "{:.2f}", "#3b6ea8", 0);
  svg += svg_panel("k90 per layer (tokens holding 90% of a row's attention, mean over rows)", k90,
                   static_cast<double>(row_k_for_mass(uniform_row, 0.9)), "{:.1f}", "#d08a2c", kPanelHeight);
  return svg + "</svg>\n";
}

std::string join_indices(const std::vector<int64_t>& indices, const std::string& separator) {
  std::string text;
  for (size_t i = 0; i < indices.size(); ++i) text += (i ? separator : "") + std::to_string(indices[i]);
  return text;
}

std::string heatmap_file_name(size_t k) { return fmt::format("cls_attention_img{}.png", k); }

data::Image image_with_maps(const data::Image& input, const std::vector<std::vector<float>>& maps, int64_t grid,
                            double scale) {
  constexpr int kMinTile = 128, kGap = 4;
  const int factor = std::max(1, (kMinTile + input.height - 1) / input.height);
  const data::Image image = data::resize(input, input.height * factor, input.width * factor, data::Interp::Bilinear);
  const int tiles = 1 + static_cast<int>(maps.size());
  data::Image canvas(image.height, tiles * image.width + (tiles - 1) * kGap, 3);
  std::fill(canvas.pixels.begin(), canvas.pixels.end(), uint8_t{255});
  paste(canvas, image, 0);
  for (size_t i = 0; i < maps.size(); ++i) {
    paste(canvas, blend_heatmap(image, maps[i], grid, scale), static_cast<int>(i + 1) * (image.width + kGap));
  }
  return canvas;
}

data::Image cls_attention_picture(const ClsAttentionMaps& maps, int64_t grid) {
  return image_with_maps(maps.input, maps.layers, grid);
}

data::Image to_rgb_image(const Tensor& images, int64_t b, const Preprocess& preprocess) {
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  check(channels == 3, "pictures need RGB input, got {} channels", channels);
  data::Image image(static_cast<int>(height), static_cast<int>(width), 3);
  const float* values = images.data<float>() + b * channels * height * width;
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const double v = values[(c * height + y) * width + x] * preprocess.std[c] + preprocess.mean[c];
        image.at(y, x, c) = static_cast<uint8_t>(std::lround(std::clamp(v * 255.0, 0.0, 255.0)));
      }
    }
  }
  return image;
}

std::string scatter_svg(const std::vector<ScatterPoint>& points, const std::string& x_label,
                        const std::string& y_label) {
  const double width = 480, height = 320, margin = 50;
  double xmin = 1e9, xmax = -1e9, ymin = 1e9, ymax = -1e9;
  for (const ScatterPoint& p : points) {
    xmin = std::min(xmin, p.x);
    xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y - p.y_err);
    ymax = std::max(ymax, p.y + p.y_err);
  }
  if (xmax - xmin < 1e-9) xmax = xmin + 1;
  if (ymax - ymin < 1e-9) ymax = ymin + 1;
  auto x_of = [&](double v) { return margin + (v - xmin) / (xmax - xmin) * (width - 2 * margin); };
  auto y_of = [&](double v) { return height - margin - (v - ymin) / (ymax - ymin) * (height - 2 * margin); };
  std::string svg = fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{0}' height='{1}' font-family='sans-serif' font-size='12'>\n"
      "<rect width='100%' height='100%' fill='white'/>\n"
      "<line x1='{2}' y1='{3}' x2='{4}' y2='{3}' stroke='black'/><line x1='{2}' y1='{2}' x2='{2}' y2='{3}' stroke='black'/>\n"
      "<text x='{5}' y='{6}' text-anchor='middle'>{15}</text>\n"
      "<text x='14' y='{7}' transform='rotate(-90 14 {7})' text-anchor='middle'>{16}</text>\n"
      "<text x='{2}' y='{8}'>{9:.3g}</text><text x='{4}' y='{8}' text-anchor='end'>{10:.3g}</text>\n"
      "<text x='{11}' y='{3}' text-anchor='end'>{12:.3g}</text><text x='{11}' y='{13}' text-anchor='end'>{14:.3g}</text>\n",
      width, height, margin, height - margin, width - margin, width / 2, height - 12, height / 2, height - margin + 16,
      xmin, xmax, margin - 4, ymin, margin + 4, ymax, html_escape(x_label), html_escape(y_label));
  for (const ScatterPoint& p : points) {
    const double px = x_of(p.x), py = y_of(p.y);
    if (p.y_err > 0) {
      svg += fmt::format("<line x1='{0:.1f}' y1='{1:.1f}' x2='{0:.1f}' y2='{2:.1f}' stroke='steelblue'/>\n", px,
                         y_of(p.y - p.y_err), y_of(p.y + p.y_err));
    }
    svg += fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='4' fill='steelblue'/><text x='{:.1f}' y='{:.1f}'>{}</text>\n",
                       px, py, px + 6, py - 6, html_escape(p.label));
  }
  return svg + "</svg>\n";
}

std::string index_html(const SparsityAnalysis& analysis, const SparsityRunInfo& info) {
  const SparsityAccumulator& stats = analysis.stats();
  std::string html = fmt::format(
      "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Attention sparsity: {0}</title>\n"
      "<style>body{{font-family:sans-serif;margin:2em;max-width:110em}} table{{border-collapse:collapse}} "
      "td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} img{{max-width:100%}} "
      "figure{{margin:1em 0}}</style></head><body>\n"
      "<h1>Attention sparsity</h1>\n"
      "<p>Model <code>{0}</code>, {1} images from <code>{2}</code>, N = {3} tokens, {4} layers &times; {5} heads; "
      "{6:.1f} s on {7}. Metric definitions: docs/SPARSITY.md. Numbers: <a href=\"sparsity.json\">sparsity.json</a>, "
      "<a href=\"sparsity.csv\">sparsity.csv</a>.</p>\n"
      "<p>Layers from sparsest to densest by k90: <b>{8}</b></p>\n"
      "<img src=\"layers.svg\" alt=\"entropy and k90 per layer\">\n<h2>Per layer (mean over heads, rows and "
      "images)</h2>\n",
      html_escape(info.model), analysis.images(), html_escape(info.data), analysis.config().num_tokens(),
      stats.layers(), stats.heads(), info.seconds, html_escape(info.device), join_indices(analysis.ranking(), ", "));
  html += html_table(stats);
  if (!analysis.heatmaps().empty()) {
    html += fmt::format(
        "<h2>Class-token attention</h2>\n<p>Each row: the input image, then layers 0 to {}: the class token's "
        "attention over the patches, averaged over heads, one block per patch, each map scaled to its own maximum "
        "(viridis: dark purple = least, yellow = most).</p>\n",
        stats.layers() - 1);
  }
  for (size_t k = 0; k < analysis.heatmaps().size(); ++k) {
    html += fmt::format("<figure><img src=\"{}\" alt=\"class-token attention\"><figcaption>{}</figcaption></figure>\n",
                        heatmap_file_name(k), html_escape(analysis.heatmaps()[k].name));
  }
  return html + "</body></html>\n";
}

}  // namespace engine
