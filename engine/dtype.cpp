#include "engine/dtype.h"

#include <cmath>

#include "engine/error.h"

namespace engine {

namespace {
struct DTypeInfo {
  DType dtype;
  size_t size;
  const char* name;
  const char* safetensors_name;
};
constexpr DTypeInfo kInfo[] = {
    {DType::F32, 4, "float32", "F32"}, {DType::F64, 8, "float64", "F64"},
    {DType::BF16, 2, "bfloat16", "BF16"}, {DType::F16, 2, "float16", "F16"},
    {DType::I32, 4, "int32", "I32"},     {DType::I64, 8, "int64", "I64"},
    {DType::U8, 1, "uint8", "U8"},
};
const DTypeInfo& info(DType dtype) { return kInfo[static_cast<int>(dtype)]; }
}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
const char* dtype_name(DType dtype) { return info(dtype).name; }
const char* safetensors_dtype_name(DType dtype) { return info(dtype).safetensors_name; }
bool is_floating(DType dtype) {
  return dtype == DType::F32 || dtype == DType::F64 || dtype == DType::BF16 || dtype == DType::F16;
}

bool parse_safetensors_dtype(const std::string& name, DType* out) {
  for (const DTypeInfo& entry : kInfo) {
    if (name == entry.safetensors_name) {
      *out = entry.dtype;
      return true;
    }
  }
  return false;
}

uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // keep it a NaN
  uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);  // round to nearest, ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float bf16_to_float(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, 4);
  return value;
}

// IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
uint16_t float_to_f16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  uint32_t magnitude = bits & 0x7FFFFFFF;
  if (magnitude >= 0x7F800000) {  // inf or nan
    return sign | 0x7C00 | (magnitude > 0x7F800000 ? 0x200 : 0);
  }
  if (magnitude >= 0x477FF000) return sign | 0x7C00;  // rounds past the largest half: inf
  if (magnitude < 0x38800000) {  // result is subnormal (or zero) in half precision
    float abs_value;
    std::memcpy(&abs_value, &magnitude, 4);
    // Subnormal halves are multiples of 2^-24; nearbyint rounds half to even.
    return sign | static_cast<uint16_t>(std::nearbyint(abs_value * 16777216.0f));
  }
  uint32_t rounding = 0xFFF + ((magnitude >> 13) & 1);
  magnitude += rounding - (112u << 23);  // rebias exponent 127 -> 15
  return sign | static_cast<uint16_t>(magnitude >> 13);
}

float f16_to_float(uint16_t half) {
  uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  uint32_t exponent = (half >> 10) & 0x1F;
  uint32_t mantissa = half & 0x3FF;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    bits |= sign;
    std::memcpy(&value, &bits, 4);
    return value;
  }
  uint32_t bits = exponent == 31 ? (sign | 0x7F800000 | (mantissa << 13))
                                 : (sign | ((exponent + 112) << 23) | (mantissa << 13));
  std::memcpy(&value, &bits, 4);
  return value;
}

}  // namespace engine
