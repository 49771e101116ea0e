// Element types. float32 is the compute type, float64 serves gradient checks,
// bfloat16/float16 are storage types on the CPU (GPU compute comes with the
// CUDA backend), int32/int64/uint8 hold labels, indices and raw bytes.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace engine {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U8 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);          // "float32", ...
const char* safetensors_dtype_name(DType dtype);  // "F32", ...
bool parse_safetensors_dtype(const std::string& name, DType* out);  // false if unknown
bool is_floating(DType dtype);

// Scalar conversions for the 16-bit float storage types (round to nearest even).
uint16_t float_to_bf16(float value);
float bf16_to_float(uint16_t bits);
uint16_t float_to_f16(float value);
float f16_to_float(uint16_t bits);

// Storage-only 16-bit floats: the bits, with conversions through float.
struct BFloat16 {
  uint16_t bits;
  BFloat16() = default;
  explicit BFloat16(float value) : bits(float_to_bf16(value)) {}
  operator float() const { return bf16_to_float(bits); }
};
struct Half {
  uint16_t bits;
  Half() = default;
  explicit Half(float value) : bits(float_to_f16(value)) {}
  operator float() const { return f16_to_float(bits); }
};

// The C++ type behind a dtype, for templates: DTypeOf<float>::value == DType::F32.
template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct DTypeOf<BFloat16> { static constexpr DType value = DType::BF16; };
template <> struct DTypeOf<Half> { static constexpr DType value = DType::F16; };

// Runs body(T{}) with T the C++ type of any dtype (storage types included).
template <typename Body>
void dispatch_any(DType dtype, Body&& body) {
  switch (dtype) {
    case DType::F32: body(float{}); return;
    case DType::F64: body(double{}); return;
    case DType::BF16: body(BFloat16{}); return;
    case DType::F16: body(Half{}); return;
    case DType::I32: body(int32_t{}); return;
    case DType::I64: body(int64_t{}); return;
    case DType::U8: body(uint8_t{}); return;
  }
}

// Element conversion between any two dtypes (16-bit floats go through float).
template <typename To, typename From>
To convert_element(From value) {
  if constexpr (std::is_same_v<From, BFloat16> || std::is_same_v<From, Half>) {
    return convert_element<To>(static_cast<float>(value));
  } else if constexpr (std::is_same_v<To, BFloat16> || std::is_same_v<To, Half>) {
    return To(static_cast<float>(value));
  } else {
    return static_cast<To>(value);
  }
}

}  // namespace engine
