#pragma once
// The little of gRPC's wire format that pinghelp's gRPC service and the gRPC health check need,
// without a protobuf library (the project's dependency list is fixed): the 5-byte message prefix
// (compressed flag, 32-bit big-endian length) and protobuf's varint and length-delimited fields.
// The reader takes bytes from anyone, so every length is checked against what is left before it
// is used, and anything malformed is an error, never a read past the end.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar::h2 {

// One gRPC message prefixed for a body: flag 0 (uncompressed), the length, the bytes.
inline std::string grpcMessage(std::string_view payload) {
  std::string out;
  out.reserve(5 + payload.size());
  const auto n = static_cast<std::uint32_t>(payload.size());
  out.push_back('\0');
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((n >> shift) & 0xff));
  }
  out.append(payload);
  return out;
}

// A unary body: exactly one message. What is wrong with it, if anything.
enum class MessageError { none, empty, truncated, trailing, compressed, badFlag };
struct UnaryMessage {
  MessageError error = MessageError::none;
  std::string_view payload;
};
inline UnaryMessage unaryMessage(std::string_view body) {
  if (body.empty()) {
    return {MessageError::empty, {}};
  }
  if (body.size() < 5) {
    return {MessageError::truncated, {}};
  }
  const auto flag = static_cast<unsigned char>(body[0]);
  std::uint64_t n = 0;
  for (std::size_t i = 1; i < 5; ++i) {
    n = (n << 8) | static_cast<unsigned char>(body[i]);
  }
  if (flag > 1) {
    return {MessageError::badFlag, {}};
  }
  if (body.size() - 5 < n) {
    return {MessageError::truncated, {}};
  }
  if (body.size() - 5 > n) {
    return {MessageError::trailing, {}};
  }
  if (flag == 1) {
    return {MessageError::compressed, {}};  // we announce no grpc-accept-encoding
  }
  return {MessageError::none, body.substr(5)};
}

// Protobuf fields written: a varint, a length-delimited field (strings), a varint field.
inline void protoVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
inline void protoString(std::string& out, std::uint32_t field, std::string_view value) {
  protoVarint(out, (std::uint64_t{field} << 3) | 2);
  protoVarint(out, value.size());
  out.append(value);
}
inline void protoVarintField(std::string& out, std::uint32_t field, std::uint64_t value) {
  protoVarint(out, std::uint64_t{field} << 3);
  protoVarint(out, value);
}

// Reads a message's fields one at a time. next() is false at the end or on malformed input
// (then failed() is true): a varint longer than 10 bytes, a length past the end, a group (wire
// types 3 and 4, long deprecated), an unknown wire type, field number 0.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view bytes) : rest_(bytes) {}

  struct Field {
    std::uint32_t number = 0;
    unsigned wireType = 0;
    std::uint64_t varint = 0;  // wire type 0
    std::string_view bytes;    // wire type 2
  };

  bool next(Field& f) {
    if (rest_.empty() || failed_) {
      return false;
    }
    auto key = varint();
    if (!key || (*key >> 3) == 0 || (*key >> 3) > 0x1fffffff) {
      return fail();
    }
    f = Field{static_cast<std::uint32_t>(*key >> 3), static_cast<unsigned>(*key & 7), 0, {}};
    switch (f.wireType) {
      case 0:
        if (auto v = varint()) {
          f.varint = *v;
          return true;
        }
        return fail();
      case 1:
        return skip(8);
      case 2:
        if (auto n = varint(); n && *n <= rest_.size()) {
          f.bytes = rest_.substr(0, static_cast<std::size_t>(*n));
          rest_.remove_prefix(static_cast<std::size_t>(*n));
          return true;
        }
        return fail();
      case 5:
        return skip(4);
      default:
        return fail();
    }
  }
  bool failed() const { return failed_; }

 private:
  std::optional<std::uint64_t> varint() {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < 10 && i < rest_.size(); ++i) {
      const auto b = static_cast<unsigned char>(rest_[i]);
      if (i == 9 && b > 1) {
        return std::nullopt;  // past 64 bits
      }
      v |= std::uint64_t{b & 0x7fu} << (7 * i);
      if ((b & 0x80) == 0) {
        rest_.remove_prefix(i + 1);
        return v;
      }
    }
    return std::nullopt;  // ran off the end, or longer than 10 bytes
  }
  bool skip(std::size_t n) {
    if (rest_.size() < n) {
      return fail();
    }
    rest_.remove_prefix(n);
    return true;
  }
  bool fail() {
    failed_ = true;
    return false;
  }

  std::string_view rest_;
  bool failed_ = false;
};

// proto3 strings must be UTF-8; a parser that accepted anything would answer what grpcio's own
// servers refuse.
inline bool validUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80         ? 1
                      : (c >> 5) == 6  ? 2
                      : (c >> 4) == 14 ? 3
                      : (c >> 3) == 30 ? 4
                                       : 0;
    if (len == 0 || i + len > s.size() || (len == 2 && c < 0xc2) || (len == 4 && c > 0xf4)) {
      return false;
    }
    std::uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (std::size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
      return false;  // overlong, a surrogate, past Unicode
    }
    i += len;
  }
  return true;
}

// grpc-message is percent-encoded (gRPC's HTTP/2 protocol: anything outside 0x20-0x7e, and '%').
inline std::string grpcMessageText(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c > 0x7e || c == '%') {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

}  // namespace sidecar::h2
