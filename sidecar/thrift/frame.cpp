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
  return h;
}

}  // namespace

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
