// Reading and writing TTwitter's RequestHeader and ResponseHeader in the binary protocol. Every
// read checks the bytes left first; anything we do not read field by field is walked by
// skipBinaryValue (thrift/frame.h), which bounds nesting, so a hostile header costs its bytes.
#include "thrift/ttwitter.h"

namespace sidecar::thrift::ttwitter {

namespace {

// Binary protocol type codes.
constexpr unsigned kBool = 2, kI64 = 10, kString = 11, kStruct = 12, kList = 15;

void putBe(std::string& out, std::uint64_t v, unsigned bytes) {
  for (unsigned i = bytes; i-- > 0;) {
    out.push_back(static_cast<char>(v >> (8 * i)));
  }
}

void putFieldHead(std::string& out, unsigned type, unsigned id) {
  out.push_back(static_cast<char>(type));
  putBe(out, id, 2);
}

void putI64(std::string& out, unsigned id, std::uint64_t v) {
  putFieldHead(out, kI64, id);
  putBe(out, v, 8);
}

void putString(std::string& out, std::string_view s) {
  putBe(out, s.size(), 4);
  out += s;
}

// A binary-protocol struct read field by field, from at in in.
class Reader {
 public:
  explicit Reader(std::string_view in, std::size_t at = 0) : in_(in), at_(at) {}
  std::size_t at() const { return at_; }

  // The next field's type and id; type 0 is the stop field. False when cut short.
  bool field(unsigned& type, unsigned& id) {
    if (!has(1)) {
      return false;
    }
    type = byte(at_++);
    if (type == 0) {
      return true;
    }
    if (!has(2)) {
      return false;
    }
    id = (byte(at_) << 8) | byte(at_ + 1);
    at_ += 2;
    return true;
  }
  bool i64(std::uint64_t& v) {
    if (!has(8)) {
      return false;
    }
    v = 0;
    for (int i = 0; i < 8; ++i) {
      v = (v << 8) | byte(at_++);
    }
    return true;
  }
  bool boolean(bool& v) {
    if (!has(1)) {
      return false;
    }
    v = byte(at_++) != 0;
    return true;
  }
  bool string(std::string& v) {
    std::uint64_t n = 0;
    if (!be32(n) || !has(n)) {
      return false;
    }
    v.assign(in_.substr(at_, n));
    at_ += n;
    return true;
  }
  // A list's element type and count; the count checked against the bytes left.
  bool list(unsigned& element, std::uint64_t& n) {
    if (!has(1)) {
      return false;
    }
    element = byte(at_++);
    return be32(n) && n <= in_.size() - at_;
  }
  bool skip(unsigned type, unsigned depth) {
    const auto end = skipBinaryValue(in_, at_, type, depth);
    if (!end) {
      return false;
    }
    at_ = *end;
    return true;
  }
  // A struct {1: binary a, 2: binary b} (RequestContext, Delegation, ResponseContext); kept
  // when keep is set.
  bool pair(std::pair<std::string, std::string>* keep, unsigned depth) {
    if (depth > kMaxDepth) {
      return false;
    }
    for (;;) {
      unsigned type = 0, id = 0;
      if (!field(type, id)) {
        return false;
      }
      if (type == 0) {
        return true;
      }
      if (keep && type == kString && (id == 1 || id == 2)) {
        if (!string(id == 1 ? keep->first : keep->second)) {
          return false;
        }
      } else if (!skip(type, depth)) {
        return false;
      }
    }
  }
  // A list<pair struct> into out, at most kMaxEntries of them kept.
  bool pairs(std::vector<std::pair<std::string, std::string>>& out, unsigned depth) {
    unsigned element = 0;
    std::uint64_t n = 0;
    if (!list(element, n)) {
      return false;
    }
    if (element != kStruct) {
      // Not the list we know: walked as a value of its own, as generated code skips it.
      at_ -= 5;
      return skip(kList, depth);
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      std::pair<std::string, std::string> entry;
      const bool keep = out.size() < kMaxEntries;
      if (!pair(keep ? &entry : nullptr, depth + 2)) {
        return false;
      }
      if (keep) {
        out.push_back(std::move(entry));
      }
    }
    return true;
  }

 private:
  bool has(std::uint64_t n) const { return n <= in_.size() - at_; }
  unsigned byte(std::size_t i) const { return static_cast<unsigned char>(in_[i]); }
  bool be32(std::uint64_t& n) {
    if (!has(4)) {
      return false;
    }
    n = (std::uint64_t{byte(at_)} << 24) | (byte(at_ + 1) << 16) | (byte(at_ + 2) << 8) |
        byte(at_ + 3);
    at_ += 4;
    return true;
  }

  std::string_view in_;
  std::size_t at_;
};

// ClientId {1: string name}.
bool readClientId(Reader& r, std::optional<std::string>& out) {
  for (;;) {
    unsigned type = 0, id = 0;
    if (!r.field(type, id)) {
      return false;
    }
    if (type == 0) {
      return true;
    }
    if (id == 1 && type == kString) {
      if (!r.string(out.emplace())) {
        return false;
      }
    } else if (!r.skip(type, 2)) {
      return false;
    }
  }
}

// One RequestHeader field; a known id with another type is skipped, as generated code does.
bool readRequestField(Reader& r, unsigned type, unsigned id, RequestHeader& out) {
  auto& c = out.context;
  std::uint64_t v = 0;
  if (type == kI64 && (id == 1 || id == 2 || id == 3 || id == 7 || id == 11)) {
    if (!r.i64(v)) {
      return false;
    }
    switch (id) {
      case 1:
        c.traceId = v;
        break;
      case 2:
        c.spanId = v;
        break;
      case 3:
        c.parentId = v;
        break;
      case 7:
        out.flags = static_cast<std::int64_t>(v);
        c.debug = (v & 1) != 0;  // Finagle's Flags.Debug
        break;
      default:
        c.traceIdHigh = v;
    }
    return true;
  }
  if (type == kBool && id == 5) {
    bool b = false;
    if (!r.boolean(b)) {
      return false;
    }
    c.sampled = b;
    return true;
  }
  if (type == kStruct && id == 6) {
    return readClientId(r, out.clientId);
  }
  if (type == kString && id == 9) {
    return r.string(out.dest);
  }
  if (type == kList && id == 8) {
    return r.pairs(out.contexts, 1);
  }
  if (type == kList && id == 10) {
    return r.pairs(out.delegations, 1);
  }
  return r.skip(type, 1);
}

void putPairs(std::string& out, unsigned id,
              const std::vector<std::pair<std::string, std::string>>& pairs) {
  putFieldHead(out, kList, id);
  out.push_back(static_cast<char>(kStruct));
  putBe(out, pairs.size(), 4);
  for (const auto& [a, b] : pairs) {
    putFieldHead(out, kString, 1);
    putString(out, a);
    putFieldHead(out, kString, 2);
    putString(out, b);
    out.push_back(0);
  }
}

}  // namespace

std::optional<std::size_t> readRequestHeader(std::string_view payload, RequestHeader& out) {
  Reader r(payload);
  for (;;) {
    unsigned type = 0, id = 0;
    if (!r.field(type, id)) {
      return std::nullopt;
    }
    if (type == 0) {
      return r.at();
    }
    if (!readRequestField(r, type, id, out)) {
      return std::nullopt;
    }
  }
}

void writeRequestHeader(std::string& out, const RequestHeader& h) {
  const auto& c = h.context;
  putI64(out, 1, c.traceId);
  putI64(out, 2, c.spanId);
  if (c.parentId != 0) {
    putI64(out, 3, c.parentId);
  }
  if (c.sampled) {
    putFieldHead(out, kBool, 5);
    out.push_back(*c.sampled ? 1 : 0);
  }
  if (h.clientId) {
    putFieldHead(out, kStruct, 6);
    putFieldHead(out, kString, 1);
    putString(out, *h.clientId);
    out.push_back(0);
  }
  const auto flags = static_cast<std::uint64_t>(h.flags) | (c.debug ? 1u : 0u);
  if (flags != 0) {
    putI64(out, 7, flags);
  }
  if (!h.contexts.empty()) {
    putPairs(out, 8, h.contexts);
  }
  if (!h.dest.empty()) {
    putFieldHead(out, kString, 9);
    putString(out, h.dest);
  }
  if (!h.delegations.empty()) {
    putPairs(out, 10, h.delegations);
  }
  if (c.traceIdHigh != 0) {
    putI64(out, 11, c.traceIdHigh);
  }
  out.push_back(0);
}

std::optional<std::size_t> responseHeaderSize(std::string_view payload) {
  return skipBinaryValue(payload, 0, kStruct, 0);
}

std::string probeReplyFrame(const MessageHeader& probe) {
  std::string out;
  putBe(out, 8 + probe.name.size() + 4 + 1, 4);
  putBe(out, 0x80010002u, 4);  // strict binary, REPLY
  putString(out, probe.name);
  putBe(out, static_cast<std::uint32_t>(probe.seqid), 4);
  out.push_back(0);  // the empty result struct
  return out;
}

std::string probeFrame(std::int32_t seqid) {
  MessageHeader probe;
  probe.name = kFinagleProbe;
  probe.seqid = seqid;
  auto out = probeReplyFrame(probe);
  out[7] = 1;  // CALL, the same bytes otherwise
  return out;
}

void insertAfterPrefix(std::string& frame, std::string_view header) {
  frame.insert(4, header);
  std::string prefix;
  putBe(prefix, frame.size() - 4, 4);
  frame.replace(0, 4, prefix);
}

void eraseAfterPrefix(std::string& frame, std::size_t n) {
  frame.erase(4, n);
  std::string prefix;
  putBe(prefix, frame.size() - 4, 4);
  frame.replace(0, 4, prefix);
}

}  // namespace sidecar::thrift::ttwitter
