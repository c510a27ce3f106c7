// pinghelp over Thrift: the catalog as Thrift structs, the handler, the wire in memory, and the
// server on a real loopback socket.
#include "app/pinghelp_thrift.h"

#include <doctest/doctest.h>
#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>

#include <boost/json/parse.hpp>
#include <chrono>
#include <memory>

using namespace sidecar;
using apache::thrift::TApplicationException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TMemoryBuffer;
using apache::thrift::transport::TSocket;

namespace {

HelpCatalog catalogWithIndex(const std::string& indexJson) {
  HelpCatalog c;
  c.indexJson = indexJson;
  return c;
}

HelpCatalog shippedCatalog() {
  auto loaded = loadHelpCatalog(PINGHELP_SOURCE_HELP_DIR);
  REQUIRE(std::holds_alternative<HelpCatalog>(loaded));
  return std::get<HelpCatalog>(loaded);
}

// A client and the processor joined by two in-memory buffers: what the client sends is framed
// and binary exactly as on a socket, and the processor answers it in place.
struct InMemoryWire {
  std::shared_ptr<TMemoryBuffer> toServer = std::make_shared<TMemoryBuffer>();
  std::shared_ptr<TMemoryBuffer> toClient = std::make_shared<TMemoryBuffer>();
  std::shared_ptr<TBinaryProtocol> clientOut =
      std::make_shared<TBinaryProtocol>(std::make_shared<TFramedTransport>(toServer));
  std::shared_ptr<TBinaryProtocol> clientIn =
      std::make_shared<TBinaryProtocol>(std::make_shared<TFramedTransport>(toClient));
  std::shared_ptr<TBinaryProtocol> serverIn =
      std::make_shared<TBinaryProtocol>(std::make_shared<TFramedTransport>(toServer));
  std::shared_ptr<TBinaryProtocol> serverOut =
      std::make_shared<TBinaryProtocol>(std::make_shared<TFramedTransport>(toClient));
  pinghelp::PingHelpProcessor processor{
      std::make_shared<PingHelpHandler>(thriftMethodsOf(shippedCatalog()))};
  pinghelp::PingHelpClient client{clientIn, clientOut};

  void serveOne() { REQUIRE(processor.process(serverIn, serverOut, nullptr)); }
};

struct Connection {
  std::shared_ptr<TSocket> socket;
  std::shared_ptr<TFramedTransport> framed;
  pinghelp::PingHelpClient client;
  explicit Connection(uint16_t port)
      : socket(std::make_shared<TSocket>("127.0.0.1", port)),
        framed(std::make_shared<TFramedTransport>(socket)),
        client(std::make_shared<TBinaryProtocol>(framed)) {
    socket->setRecvTimeout(5000);
    framed->open();
  }
};

}  // namespace

TEST_CASE("the Thrift methods are the help files, in the order GET /help lists them") {
  auto catalog = shippedCatalog();
  auto methods = thriftMethodsOf(catalog);
  const auto parsed = boost::json::parse(catalog.indexJson);
  const auto& index = parsed.at("methods").as_array();
  REQUIRE(methods.size() == index.size());
  REQUIRE(methods.size() == catalog.methodJson.size());
  for (std::size_t i = 0; i < methods.size(); ++i) {
    const auto& want = index[i].as_object();
    CHECK(methods[i].name == want.at("name").as_string());
    CHECK(methods[i].method == want.at("method").as_string());
    CHECK(methods[i].path == want.at("path").as_string());
    CHECK(methods[i].description == want.at("description").as_string());
  }
}

TEST_CASE("a help file's response: strings as they are, other JSON as its text, else left out") {
  auto methods = thriftMethodsOf(catalogWithIndex(
      R"({"service":"pinghelp","methods":[)"
      R"({"name":"a","method":"GET","path":"/a","description":"d","extra":1,)"
      R"("response":{"body":"pong","status":200,"headers":{"x":"y"}}},)"
      R"({"name":"b","method":"GET","path":"/b","description":"d","response":"text"},)"
      R"({"name":"c","method":"GET","path":"/c","description":"d"}]})"));
  REQUIRE(methods.size() == 3);
  REQUIRE(bool(methods[0].__isset.response));
  CHECK(methods[0].response == std::map<std::string, std::string>{{"body", "pong"},
                                                                  {"status", "200"},
                                                                  {"headers", R"({"x":"y"})"}});
  CHECK_FALSE(bool(methods[1].__isset.response));
  CHECK_FALSE(bool(methods[2].__isset.response));
}

TEST_CASE("the handler: ping, help, helpFor, and UnknownMethod naming what was asked") {
  auto methods = thriftMethodsOf(shippedCatalog());
  PingHelpHandler handler(methods);
  std::string pong;
  handler.ping(pong);
  CHECK(pong == "pong");
  std::vector<pinghelp::MethodHelp> all;
  handler.help(all);
  CHECK(all == methods);
  pinghelp::MethodHelp one;
  handler.helpFor(one, "ping");
  CHECK(one.path == "/ping");
  try {
    handler.helpFor(one, "nope");
    FAIL("helpFor(nope) returned");
  } catch (const pinghelp::UnknownMethod& e) {
    CHECK(e.name == "nope");
  }
}

TEST_CASE("over the wire: framed binary calls, the declared exception, an unknown method") {
  InMemoryWire wire;
  wire.client.send_ping();
  wire.serveOne();
  std::string pong;
  wire.client.recv_ping(pong);
  CHECK(pong == "pong");

  wire.client.send_helpFor("nope");
  wire.serveOne();
  pinghelp::MethodHelp one;
  CHECK_THROWS_AS(wire.client.recv_helpFor(one), pinghelp::UnknownMethod);

  // Finagle's upgrade probe: a method we do not have gets TApplicationException UNKNOWN_METHOD
  // with the caller's seqid, and the connection goes on.
  wire.clientOut->writeMessageBegin("__can__finagle__trace__v3__", apache::thrift::protocol::T_CALL,
                                    0);
  wire.clientOut->writeStructBegin("args");
  wire.clientOut->writeFieldStop();
  wire.clientOut->writeStructEnd();
  wire.clientOut->writeMessageEnd();
  wire.clientOut->getTransport()->flush();
  wire.serveOne();
  std::string name;
  apache::thrift::protocol::TMessageType type;
  int32_t seqid = -1;
  wire.clientIn->readMessageBegin(name, type, seqid);
  CHECK(name == "__can__finagle__trace__v3__");
  CHECK(type == apache::thrift::protocol::T_EXCEPTION);
  CHECK(seqid == 0);
  TApplicationException error;
  error.read(wire.clientIn.get());
  wire.clientIn->readMessageEnd();
  CHECK(error.getType() == TApplicationException::UNKNOWN_METHOD);

  wire.client.send_helpFor("help");
  wire.serveOne();
  wire.client.recv_helpFor(one);
  CHECK(one.name == "help");
}

TEST_CASE("the server on loopback: a port of its own, two clients, a port in use, a prompt stop") {
  PinghelpThriftServer server({.address = "127.0.0.1", .port = 0},
                              std::make_shared<PingHelpHandler>(thriftMethodsOf(shippedCatalog())));
  REQUIRE(server.start() == std::nullopt);
  REQUIRE(server.port() != 0);

  Connection first(server.port());
  Connection second(server.port());
  std::string pong;
  first.client.ping(pong);
  CHECK(pong == "pong");
  std::vector<pinghelp::MethodHelp> all;
  second.client.help(all);
  CHECK(all.size() == shippedCatalog().methodJson.size());
  first.client.ping(pong);
  CHECK(pong == "pong");

  PinghelpThriftServer taken({.address = "127.0.0.1", .port = server.port()},
                             std::make_shared<PingHelpHandler>(thriftMethodsOf(shippedCatalog())));
  auto error = taken.start();
  REQUIRE(error.has_value());
  CHECK(error->find("Could not bind") != std::string::npos);

  // Both clients stay connected and idle: stop() must close them, not wait for the idle timeout.
  auto before = std::chrono::steady_clock::now();
  server.stop();
  CHECK(std::chrono::steady_clock::now() - before < std::chrono::seconds(5));
  CHECK_THROWS_AS(first.client.ping(pong), apache::thrift::transport::TTransportException);
  server.stop();  // again: nothing left to do
}
