// Thrift frame and message-header parsing, and the exception replies the sidecar writes.
#include "thrift/frame.h"

namespace sidecar::thrift {

namespace {

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

void putBe32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

void putVarint(std::string& out, std::uint32_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// A compact varint of at most 5 bytes (32 bits); none if cut short or longer.
std::optional<std::uint32_t> readVarint(std::string_view in, std::size_t& at) {
  std::uint32_t v = 0;
  for (unsigned shift = 0; shift < 35; shift += 7) {
    if (at >= in.size()) {
      return std::nullopt;
    }
    const auto b = static_cast<unsigned char>(in[at++]);
    v |= static_cast<std::uint32_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      return v;
    }
  }
  return std::nullopt;
}

bool knownType(unsigned t) { return t >= 1 && t <= 4; }

std::optional<MessageHeader> parseBinary(std::string_view in) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  if (in.size() < 8) {
    return std::nullopt;
  }
  const std::uint32_t version = be32(p);
  if ((version & 0xffff0000u) != 0x80010000u || (version & 0xff00u) != 0 ||
      !knownType(version & 0xffu)) {
    return std::nullopt;
  }
  const std::uint32_t nameLength = be32(p + 4);
  if (nameLength > in.size() - 8 || in.size() - 8 - nameLength < 4) {
    return std::nullopt;
  }
  MessageHeader h;
  h.protocol = Protocol::binary;
  h.type = static_cast<MessageType>(version & 0xffu);
  h.name.assign(in.substr(8, nameLength));
  h.seqid = static_cast<std::int32_t>(be32(p + 8 + nameLength));
  h.headerSize = 12 + nameLength;
  return h;
}

std::optional<MessageHeader> parseCompact(std::string_view in) {
  if (in.size() < 2) {
    return std::nullopt;
  }
  const auto second = static_cast<unsigned char>(in[1]);
  if ((second & 0x1fu) != 1 || !knownType(second >> 5)) {
    return std::nullopt;
  }
  std::size_t at = 2;
  const auto seqid = readVarint(in, at);
  if (!seqid) {
    return std::nullopt;
  }
  const auto nameLength = readVarint(in, at);
  if (!nameLength || *nameLength > in.size() - at) {
    return std::nullopt;
  }
  MessageHeader h;
  h.protocol = Protocol::compact;
  h.type = static_cast<MessageType>(second >> 5);
  h.name.assign(in.substr(at, *nameLength));
  h.seqid = static_cast<std::int32_t>(*seqid);
  h.headerSize = static_cast<std::uint32_t>(at + *nameLength);
  return h;
}

// Walks one value of a message's body without decoding it, as TProtocol's skip() does. Every
// step checks what is left, so a walk is linear in the payload and never reads past it; a
// container's count is checked against the bytes left (each element takes one at least) before
// its elements are walked.
class Walker {
 public:
  Walker(std::string_view in, std::size_t at) : in_(in), at_(at) {}
  std::size_t at() const { return at_; }

  // Binary protocol types: 2 bool, 3 byte, 4 double, 6 i16, 8 i32, 10 i64, 11 string/binary,
  // 12 struct, 13 map, 14 set, 15 list, 16 uuid.
  bool binaryValue(unsigned type, unsigned depth) {
    switch (type) {
      case 2:
      case 3:
        return take(1);
      case 6:
        return take(2);
      case 8:
        return take(4);
      case 4:
      case 10:
        return take(8);
      case 16:
        return take(16);
      case 11: {
        std::uint32_t n = 0;
        return be(n) && take(n);
      }
      case 12:
        return binaryStruct(depth + 1);
      case 13: {
        std::uint32_t n = 0;
        if (!take(2) || !be(n) || n > left()) {
          return false;
        }
        const auto key = byteAt(at_ - 6);
        const auto value = byteAt(at_ - 5);
        return nested(depth, [&] {
          for (std::uint32_t i = 0; i < n; ++i) {
            if (!binaryValue(key, depth + 1) || !binaryValue(value, depth + 1)) {
              return false;
            }
          }
          return true;
        });
      }
      case 14:
      case 15: {
        std::uint32_t n = 0;
        if (!take(1) || !be(n) || n > left()) {
          return false;
        }
        const auto element = byteAt(at_ - 5);
        return nested(depth, [&] {
          for (std::uint32_t i = 0; i < n; ++i) {
            if (!binaryValue(element, depth + 1)) {
              return false;
            }
          }
          return true;
        });
      }
      default:
        return false;
    }
  }

  bool binaryStruct(unsigned depth) {
    if (depth > kMaxDepth) {
      return false;
    }
    while (true) {
      if (!take(1)) {
        return false;
      }
      const auto type = byteAt(at_ - 1);
      if (type == 0) {
        return true;
      }
      if (!take(2) || !binaryValue(type, depth)) {  // the field id, then its value
        return false;
      }
    }
  }

  // Compact protocol types: 1 true, 2 false (in a field header, the value itself; in a
  // container, one byte), 3 byte, 4 i16, 5 i32, 6 i64, 7 double, 8 binary, 9 list, 10 set,
  // 11 map, 12 struct, 13 uuid.
  bool compactValue(unsigned type, unsigned depth, bool inContainer) {
    switch (type) {
      case 1:
      case 2:
        return !inContainer || take(1);
      case 3:
        return take(1);
      case 4:
      case 5:
      case 6:
        return varint();
      case 7:
        return take(8);
      case 13:
        return take(16);
      case 8: {
        std::uint64_t n = 0;
        return varint(&n) && n <= left() && take(static_cast<std::size_t>(n));
      }
      case 12:
        return compactStruct(depth + 1);
      case 9:
      case 10: {
        if (!take(1)) {
          return false;
        }
        const auto head = byteAt(at_ - 1);
        std::uint64_t n = head >> 4;
        if (n == 15 && !varint(&n)) {
          return false;
        }
        if (n > left()) {
          return false;
        }
        const unsigned element = head & 0x0fu;
        return nested(depth, [&] {
          for (std::uint64_t i = 0; i < n; ++i) {
            if (!compactValue(element, depth + 1, true)) {
              return false;
            }
          }
          return true;
        });
      }
      case 11: {
        std::uint64_t n = 0;
        if (!varint(&n)) {
          return false;
        }
        if (n == 0) {
          return true;  // an empty map has no types byte
        }
        if (n > left() || !take(1)) {
          return false;
        }
        const auto types = byteAt(at_ - 1);
        return nested(depth, [&] {
          for (std::uint64_t i = 0; i < n; ++i) {
            if (!compactValue(types >> 4, depth + 1, true) ||
                !compactValue(types & 0x0fu, depth + 1, true)) {
              return false;
            }
          }
          return true;
        });
      }
      default:
        return false;
    }
  }

  bool compactStruct(unsigned depth) {
    if (depth > kMaxDepth) {
      return false;
    }
    while (true) {
      if (!take(1)) {
        return false;
      }
      const auto head = byteAt(at_ - 1);
      if (head == 0) {
        return true;
      }
      if ((head >> 4) == 0 && !varint()) {  // no delta: the field id follows, zigzag
        return false;
      }
      if (!compactValue(head & 0x0fu, depth, false)) {
        return false;
      }
    }
  }

 private:
  std::size_t left() const { return in_.size() - at_; }
  unsigned byteAt(std::size_t i) const { return static_cast<unsigned char>(in_[i]); }
  bool take(std::size_t n) {
    if (n > left()) {
      return false;
    }
    at_ += n;
    return true;
  }
  bool be(std::uint32_t& v) {
    if (left() < 4) {
      return false;
    }
    v = be32(reinterpret_cast<const unsigned char*>(in_.data() + at_));
    at_ += 4;
    return true;
  }
  // A compact varint of at most 10 bytes (64 bits).
  bool varint(std::uint64_t* out = nullptr) {
    std::uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
      if (left() == 0) {
        return false;
      }
      const auto b = byteAt(at_++);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        if (out) {
          *out = v;
        }
        return true;
      }
    }
    return false;
  }
  // A container's elements sit one level deeper than the container.
  template <class Elements>
  static bool nested(unsigned depth, Elements elements) {
    return depth + 1 <= kMaxDepth && elements();
  }

  std::string_view in_;
  std::size_t at_;
};

}  // namespace

bool holdsOneMessage(std::string_view payload, const MessageHeader& header) {
  if (header.headerSize > payload.size()) {
    return false;
  }
  Walker w(payload, header.headerSize);
  const bool whole = header.protocol == Protocol::binary ? w.binaryStruct(1) : w.compactStruct(1);
  return whole && w.at() == payload.size();
}

std::optional<std::size_t> skipBinaryValue(std::string_view payload, std::size_t at, unsigned type,
                                           unsigned depth) {
  if (at > payload.size()) {
    return std::nullopt;
  }
  Walker w(payload, at);
  if (!w.binaryValue(type, depth)) {
    return std::nullopt;
  }
  return w.at();
}

std::optional<MessageType> replyType(std::string_view payload, const MessageHeader& call) {
  const auto reply = parseHeader(payload);
  if (!reply || (reply->type != MessageType::reply && reply->type != MessageType::exception) ||
      reply->seqid != call.seqid || reply->name != call.name || reply->protocol != call.protocol ||
      !holdsOneMessage(payload, *reply)) {
    return std::nullopt;
  }
  return reply->type;
}

std::uint32_t frameLength(const unsigned char* prefix) { return be32(prefix); }

std::optional<MessageHeader> parseHeader(std::string_view payload) {
  if (payload.empty()) {
    return std::nullopt;
  }
  const auto first = static_cast<unsigned char>(payload[0]);
  if (first == 0x80) {
    return parseBinary(payload);
  }
  if (first == 0x82) {
    return parseCompact(payload);
  }
  return std::nullopt;
}

std::string exceptionFrame(const MessageHeader& call, AppError type, std::string_view message) {
  std::string out(4, '\0');
  const auto code = static_cast<std::int32_t>(type);
  if (call.protocol == Protocol::binary) {
    putBe32(out, 0x80010003u);
    putBe32(out, static_cast<std::uint32_t>(call.name.size()));
    out += call.name;
    putBe32(out, static_cast<std::uint32_t>(call.seqid));
    out.push_back(11);  // field 1: string message
    out.push_back(0);
    out.push_back(1);
    putBe32(out, static_cast<std::uint32_t>(message.size()));
    out += message;
    out.push_back(8);  // field 2: i32 type
    out.push_back(0);
    out.push_back(2);
    putBe32(out, static_cast<std::uint32_t>(code));
    out.push_back(0);  // stop
  } else {
    out.push_back(static_cast<char>(0x82));
    out.push_back(static_cast<char>((3 << 5) | 1));  // EXCEPTION, version 1
    putVarint(out, static_cast<std::uint32_t>(call.seqid));
    putVarint(out, static_cast<std::uint32_t>(call.name.size()));
    out += call.name;
    out.push_back(0x18);  // field delta 1, binary
    putVarint(out, static_cast<std::uint32_t>(message.size()));
    out += message;
    out.push_back(0x15);  // field delta 1, i32 (zigzag)
    putVarint(out,
              (static_cast<std::uint32_t>(code) << 1) ^ static_cast<std::uint32_t>(code >> 31));
    out.push_back(0);  // stop
  }
  const auto length = static_cast<std::uint32_t>(out.size() - 4);
  std::string prefix;
  putBe32(prefix, length);
  out.replace(0, 4, prefix);
  return out;
}

}  // namespace sidecar::thrift
