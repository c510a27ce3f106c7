// The interface of pinghelp, the reference local service behind the sidecar. pinghelp serves it
// as framed, binary Thrift on --thrift-listen, and the same three methods as plain HTTP/1.1 on
// --listen; the texts come from proto/help/*.json, one method a file, loaded once at start-up.
//
// Compiled at build time by Debian's thrift-compiler 0.17 (proto/CMakeLists.txt); nothing
// generated from it is committed. Field ids are the contract: never renumber or reuse one.
// No field is `required`: a field that is required can never be retired.

namespace cpp pinghelp
namespace py pinghelp
namespace java com.example.pinghelp

// One method's description: the fields of its help file (proto/help/<name>.json).
struct MethodHelp {
  1: string name         // "ping"; the key of helpFor()
  2: string method       // the HTTP method of its HTTP twin: "GET"
  3: string path         // the HTTP path of its HTTP twin: "/ping"
  4: string description
  // The help file's optional "response" object (content_type, body). A value that is not a
  // JSON string in the file is carried as its compact JSON text.
  5: optional map<string, string> response
}

// helpFor() was asked about a method that has no help file.
exception UnknownMethod {
  1: string name
}

service PingHelp {
  // "pong" (GET /ping)
  string ping()
  // Every method's description, in the order GET /help lists them (by help file name).
  list<MethodHelp> help()
  // One method's description (GET /help/{name}); UnknownMethod when there is none (HTTP: 404).
  MethodHelp helpFor(1: string name) throws (1: UnknownMethod unknown)
}
