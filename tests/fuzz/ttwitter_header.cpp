// TTwitter's RequestHeader and ResponseHeader readers on hostile bytes. Invariants: a header that
// reads takes bytes of the input only, and keeps at most kMaxEntries contexts and delegations;
// what we write from it reads back to the same ids, client id and entries, taking all its bytes;
// the ResponseHeader walk stays inside the input.
#include <thrift/ttwitter.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz.h"

namespace ttwitter = sidecar::thrift::ttwitter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  ttwitter::RequestHeader h;
  if (const auto n = ttwitter::readRequestHeader(in, h)) {
    FUZZ_CHECK(*n >= 1 && *n <= size);
    FUZZ_CHECK(h.contexts.size() <= ttwitter::kMaxEntries);
    FUZZ_CHECK(h.delegations.size() <= ttwitter::kMaxEntries);
    std::string out;
    ttwitter::writeRequestHeader(out, h);
    ttwitter::RequestHeader back;
    const auto m = ttwitter::readRequestHeader(out, back);
    FUZZ_CHECK(m && *m == out.size());
    FUZZ_CHECK(back.context.traceId == h.context.traceId);
    FUZZ_CHECK(back.context.spanId == h.context.spanId);
    FUZZ_CHECK(back.context.parentId == h.context.parentId);
    FUZZ_CHECK(back.context.traceIdHigh == h.context.traceIdHigh);
    FUZZ_CHECK(back.context.sampled == h.context.sampled);
    FUZZ_CHECK(back.context.debug == h.context.debug);
    FUZZ_CHECK(back.clientId == h.clientId);
    FUZZ_CHECK(back.dest == h.dest);
    FUZZ_CHECK(back.contexts == h.contexts);
    FUZZ_CHECK(back.delegations == h.delegations);
  }
  if (const auto n = ttwitter::responseHeaderSize(in)) {
    FUZZ_CHECK(*n >= 1 && *n <= size);
  }
  return 0;
}
