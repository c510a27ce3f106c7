// The ZooKeeper seam: the C client's codes in our types, which failures are worth a retry, and
// the real session's promise that callbacks run on our io_context and never after it is gone.
#include <doctest/doctest.h>
#include <registry/detail/zk_codes.h>
#include <registry/zk_session.h>
#include <zookeeper/zookeeper.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

using namespace registry;

TEST_CASE("the C client's return codes become ZkError") {
  using detail::zkErrorFromCode;
  CHECK(zkErrorFromCode(ZOK) == ZkError::Ok);
  CHECK(zkErrorFromCode(ZCONNECTIONLOSS) == ZkError::ConnectionLoss);
  CHECK(zkErrorFromCode(ZOPERATIONTIMEOUT) == ZkError::OperationTimeout);
  CHECK(zkErrorFromCode(ZTHROTTLEDOP) == ZkError::OperationTimeout);
  CHECK(zkErrorFromCode(ZSESSIONEXPIRED) == ZkError::SessionExpired);
  CHECK(zkErrorFromCode(ZINVALIDSTATE) == ZkError::SessionExpired);  // calls on an expired handle
  CHECK(zkErrorFromCode(ZSESSIONMOVED) == ZkError::SessionMoved);
  CHECK(zkErrorFromCode(ZNOAUTH) == ZkError::NoAuth);
  CHECK(zkErrorFromCode(ZAUTHFAILED) == ZkError::NoAuth);
  CHECK(zkErrorFromCode(ZBADARGUMENTS) == ZkError::BadArguments);
  CHECK(zkErrorFromCode(ZINVALIDACL) == ZkError::InvalidAcl);
  CHECK(zkErrorFromCode(ZNONODE) == ZkError::NoNode);
  CHECK(zkErrorFromCode(ZNODEEXISTS) == ZkError::NodeExists);
  CHECK(zkErrorFromCode(ZNOTEMPTY) == ZkError::Other);
  CHECK(zkErrorFromCode(ZMARSHALLINGERROR) == ZkError::Other);
  CHECK(zkErrorFromCode(12345) == ZkError::Other);
}

TEST_CASE("session states and watch events become ours") {
  using detail::zkEventFromCode;
  using detail::zkStateFromCode;
  CHECK(zkStateFromCode(ZOO_CONNECTED_STATE) == ZkState::Connected);
  CHECK(zkStateFromCode(ZOO_READONLY_STATE) == ZkState::Connected);
  CHECK(zkStateFromCode(ZOO_CONNECTING_STATE) == ZkState::Connecting);
  CHECK(zkStateFromCode(ZOO_ASSOCIATING_STATE) == ZkState::Connecting);
  CHECK(zkStateFromCode(ZOO_EXPIRED_SESSION_STATE) == ZkState::Expired);
  CHECK(zkStateFromCode(ZOO_AUTH_FAILED_STATE) == ZkState::AuthFailed);
  CHECK(zkEventFromCode(ZOO_SESSION_EVENT) == ZkEvent::Session);
  CHECK(zkEventFromCode(ZOO_CREATED_EVENT) == ZkEvent::Created);
  CHECK(zkEventFromCode(ZOO_DELETED_EVENT) == ZkEvent::Deleted);
  CHECK(zkEventFromCode(ZOO_CHANGED_EVENT) == ZkEvent::DataChanged);
  CHECK(zkEventFromCode(ZOO_CHILD_EVENT) == ZkEvent::ChildrenChanged);
  CHECK(zkEventFromCode(ZOO_NOTWATCHING_EVENT) == ZkEvent::NotWatching);
}

TEST_CASE("the C client's own log lines are read for the reason a server is out of reach") {
  using detail::parseZkClientMessage;
  // As zookeeper_mt 3.8 writes them to its log callback.
  auto refused = parseZkClientMessage(
      "2026-12-04 19:07:37,763:19289(0x7f1cd7f606c0):ZOO_ERROR@check_events@2985: Socket "
      "127.0.0.1:1 zk retcode=-4, errno=111(Connection refused): server refused to accept the "
      "client");
  CHECK(refused.level == "ERROR");
  CHECK(refused.unreachable);
  CHECK(refused.error == "Connection refused");
  CHECK(refused.text.starts_with("Socket 127.0.0.1:1 zk retcode=-4"));
  auto name = parseZkClientMessage(
      "2026-12-04 19:07:39,779:19293(0x7efe4df02740):ZOO_ERROR@resolve_hosts@947: getaddrinfo: "
      "Name or service not known\n");
  CHECK(name.unreachable);
  CHECK(name.error == "getaddrinfo: Name or service not known");  // the newline is gone
  auto other = parseZkClientMessage(
      "2026-12-04 19:07:39,779:1(0x1):ZOO_WARN@zookeeper_interest@1234: Exceeded deadline by 5ms");
  CHECK(other.level == "WARN");
  CHECK_FALSE(other.unreachable);
  CHECK(other.error == "Exceeded deadline by 5ms");
  auto bare = parseZkClientMessage("something else entirely");
  CHECK(bare.level.empty());
  CHECK(bare.text == "something else entirely");
}

TEST_CASE("retry what a reconnect or a new session can fix, nothing that needs a person") {
  // docs/zookeeper.md, "Lifecycle".
  for (auto e : {ZkError::ConnectionLoss, ZkError::OperationTimeout, ZkError::SessionExpired,
                 ZkError::SessionMoved}) {
    CHECK(retryable(e));
  }
  for (auto e : {ZkError::Ok, ZkError::NoAuth, ZkError::BadArguments, ZkError::InvalidAcl,
                 ZkError::NoNode, ZkError::NodeExists, ZkError::Other}) {
    CHECK_FALSE(retryable(e));
  }
}

TEST_CASE("error names are the C client's wording, which the docs and operators use") {
  CHECK(zkErrorName(ZkError::NoAuth) == zerror(ZNOAUTH));
  CHECK(zkErrorName(ZkError::ConnectionLoss) == zerror(ZCONNECTIONLOSS));
  CHECK(zkErrorName(ZkError::SessionExpired) == zerror(ZSESSIONEXPIRED));
  CHECK(zkErrorName(ZkError::OperationTimeout) == zerror(ZOPERATIONTIMEOUT));
  CHECK(zkErrorName(ZkError::NoNode) == zerror(ZNONODE));
  CHECK(zkStateName(ZkState::AuthFailed) == "auth_failed");
}

TEST_CASE("the real session calls back on our io_context, and never once it is gone") {
  boost::asio::io_context ioc;
  const auto self = std::this_thread::get_id();
  // Nothing listens on port 1: the client keeps trying, and fails what was queued.
  ZkSessionOptions options{"127.0.0.1:1", std::chrono::milliseconds(2'000), ""};
  int events = 0;
  auto session = openZkSession(ioc, options, [&](ZkEvent, ZkState, const std::string&) {
    CHECK(std::this_thread::get_id() == self);
    ++events;
  });
  CHECK(session->state() == ZkState::Connecting);
  std::optional<ZkError> first;
  session->children("/a", false, [&](ZkError e, std::vector<std::string>) {
    CHECK(std::this_thread::get_id() == self);
    first = e;
  });
  CHECK_FALSE(first);  // never inside the call
  // The C client's threads post; nothing keeps run() going meanwhile, so poll.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!first && std::chrono::steady_clock::now() < end) {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(first);
  CHECK(*first == ZkError::ConnectionLoss);

  bool late = false;
  session->children("/b", false, [&](ZkError, std::vector<std::string>) { late = true; });
  session.reset();
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(50));
  CHECK_FALSE(late);
}
