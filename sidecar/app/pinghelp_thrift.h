#pragma once
// pinghelp over Thrift: the PingHelp service of proto/pinghelp.thrift answered from the same help
// catalog as GET /help, and the Apache Thrift server that serves it framed and binary.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "app/help.h"
#include "pinghelp/PingHelp.h"  // generated at build time (proto/CMakeLists.txt)

namespace apache::thrift::server {
class TThreadedServer;
}

namespace sidecar {

class ListeningServerSocket;

// The catalog's methods as Thrift structs, in the order GET /help lists them. The loader has
// checked name, method, path and description; "response" becomes the optional map (a value that
// is not a JSON string goes as its compact JSON text; a "response" that is not an object is left
// out), and any other key of a help file is not part of the Thrift interface.
std::vector<pinghelp::MethodHelp> thriftMethodsOf(const HelpCatalog& catalog);

// The PingHelp methods. The answers are made once at start-up and only read afterwards, so one
// handler serves every connection's thread without a lock.
class PingHelpHandler final : public pinghelp::PingHelpIf {
 public:
  explicit PingHelpHandler(std::vector<pinghelp::MethodHelp> methods);

  // pinghelp::PingHelpIf
  void ping(std::string& out) override;
  void help(std::vector<pinghelp::MethodHelp>& out) override;
  void helpFor(pinghelp::MethodHelp& out, const std::string& name) override;

 private:
  std::vector<pinghelp::MethodHelp> methods_;
};

struct ThriftListenConfig {
  std::string address;  // an IP address (not a name)
  uint16_t port = 0;    // 0: any free port; port() tells which
  // A connection that sends nothing (or takes no reply) for this long is closed, so that idle
  // clients cannot hold the bounded set of connection threads for ever.
  std::chrono::milliseconds idleTimeout{60'000};
  // At most this many connections are served at once; further ones wait in the listen backlog
  // until one closes (each connection has its own thread).
  int maxConnections = 64;
};

// Serves a PingHelp handler with Apache Thrift's TThreadedServer on a thread of its own: framed
// transport, strict binary protocol, frames up to Apache Thrift's default 16,384,000 bytes. A
// connection that sends a frame too large, or bytes that are not a binary Thrift message, is
// closed (and logged); the others carry on.
class PinghelpThriftServer {
 public:
  PinghelpThriftServer(ThriftListenConfig config, std::shared_ptr<pinghelp::PingHelpIf> handler);
  ~PinghelpThriftServer();  // stop()
  PinghelpThriftServer(const PinghelpThriftServer&) = delete;
  PinghelpThriftServer& operator=(const PinghelpThriftServer&) = delete;

  // Binds and listens here, on the caller's thread, then serves on a thread of its own. Returns
  // why it could not bind or listen (e.g. "Could not bind: Address already in use").
  std::optional<std::string> start();
  uint16_t port() const;  // the bound port, once start() succeeded
  // Stops accepting, lets each call in progress finish and send its reply, closes every
  // connection, and returns when the serving thread has ended. Idempotent.
  void stop();

 private:
  ThriftListenConfig config_;
  std::shared_ptr<pinghelp::PingHelpIf> handler_;
  std::shared_ptr<ListeningServerSocket> socket_;
  std::shared_ptr<apache::thrift::server::TThreadedServer> server_;
  std::thread thread_;
};

// Sends Apache Thrift's own diagnostics (a connection closed on a bad frame, say) to spdlog as
// one key=value line each, instead of its default timestamped lines on stderr.
void routeThriftLogsToSpdlog();

}  // namespace sidecar
