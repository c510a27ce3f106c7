// Finagle's TTwitter protocol (upgraded Thrift): the headers a caller and a server put before
// each plain message once the caller's __can__finagle__trace__v3__ probe was answered with a
// REPLY. Written from the wire format (field ids and types) Finagle's finagle-thrift reads and
// writes; the sidecar reads and writes these structs itself (sidecar/thrift/ttwitter.h), and the
// tests' Python client uses the code generated from this file.
//
// Each struct is serialized with TBinaryProtocol, whatever protocol the message after it uses,
// in the same frame as that message.

namespace cpp sidecar.ttwitter
namespace py ttwitter

// Who is calling, as the caller names itself (--thrift-client-id on our side).
struct ClientId {
  1: string name
}

// One broadcast context entry, e.g. com.twitter.finagle.Deadline.
struct RequestContext {
  1: binary key
  2: binary value
}

// One Dtab entry (a delegation): src => dst.
struct Delegation {
  1: string src
  2: string dst
}

// Before each call on an upgraded connection.
struct RequestHeader {
  1: i64 trace_id
  2: i64 span_id
  3: optional i64 parent_span_id
  // (field 4 is not used on the wire any more)
  5: optional bool sampled
  6: optional ClientId client_id
  // Bit 0: debug (always sampled).
  7: optional i64 flags
  8: optional list<RequestContext> contexts
  9: optional string dest
  10: optional list<Delegation> delegations
  // The upper 64 bits of a 128-bit trace id.
  11: optional i64 trace_id_high
}

struct ResponseContext {
  1: binary key
  2: binary value
}

// Before each reply on an upgraded connection.
struct ResponseHeader {
  1: optional list<ResponseContext> contexts
}
