// The interface of pinghelp, the reference local service behind the sidecar. It speaks plain
// HTTP/1.1 on loopback; this file is the contract, proto/help/*.json hold the texts it serves.

namespace cpp pinghelp
namespace java com.example.pinghelp

struct MethodHelp {
  1: required string name         // "ping"
  2: required string method       // HTTP method, "GET"
  3: required string path         // "/ping"
  4: required string description
  5: optional map<string, string> response
}

struct HelpIndex {
  1: required string service      // "pinghelp"
  2: required list<MethodHelp> methods
}

service PingHelp {
  // GET /ping -> 200 text/plain "pong"
  string ping()
  // GET /help -> 200 application/json HelpIndex
  HelpIndex help()
  // GET /help/{method} -> 200 application/json MethodHelp, 404 when unknown
  MethodHelp helpFor(1: string method)
}
