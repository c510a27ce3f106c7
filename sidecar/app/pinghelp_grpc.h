#pragma once
// pinghelp over gRPC: the PingHelp service of proto/pinghelp.proto and grpc.health.v1.Health,
// answered from the same help catalog as GET /help, served over h2c (prior knowledge) with the
// sidecar's own HTTP/2 session (h2/session.h) in the server role. The few protobuf fields are
// read and written by hand (h2/grpc_frame.h): no protobuf library is a dependency.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "app/help.h"
#include "core/config.h"
#include "net/io.h"

namespace sidecar {

// A unary call's outcome: grpc-status and grpc-message, and the reply message's protobuf bytes
// when the status is 0 (OK).
struct GrpcAnswer {
  unsigned status = 0;
  std::string message;
  std::string reply;
};

// The answer to a call of path (/package.Service/Method) with this request body (gRPC-framed);
// pure, so that the unit tests and a fuzzer can drive it with any bytes.
GrpcAnswer answerPinghelpCall(std::string_view path, std::string_view body,
                              const HelpCatalog& catalog);

// The method label of a call's path: ping, help, check (grpc.health.v1's) or other.
const char* grpcMethodLabel(std::string_view path);

struct GrpcListenConfig {
  tcp::endpoint endpoint;  // port 0: any free port; port() tells which
  // A connection with no call open for this long is closed (GOAWAY first), and so is one whose
  // peer does not read what we write; a call whose request has not ended by then is reset.
  Duration idleTimeout{60'000};
  // Connections open at once; a new one beyond it is closed at once.
  std::size_t maxConnections = 256;
  // A request message larger than this is refused (RESOURCE_EXHAUSTED): the methods take a name.
  std::size_t maxRequest = 16 * 1024;
  // Told of every call answered with a grpc-status: its method (ping, help, check, other) and the
  // status; on the io_context's thread.
  std::function<void(const char* method, unsigned status)> answered;
};

class PinghelpGrpcServer {
 public:
  PinghelpGrpcServer(asio::io_context& ioc, GrpcListenConfig config, const HelpCatalog& catalog);
  ~PinghelpGrpcServer();  // stop()
  PinghelpGrpcServer(const PinghelpGrpcServer&) = delete;
  PinghelpGrpcServer& operator=(const PinghelpGrpcServer&) = delete;

  // Binds and listens; why not, when it cannot (e.g. "Address already in use").
  std::optional<std::string> listen();
  std::uint16_t port() const;
  // Accepts and serves on the io_context's thread.
  void start();
  // Stops accepting and closes every connection. Idempotent.
  void stop();

  class Impl;  // public: the connections, in the .cpp, reach the catalog and the limits through it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sidecar
