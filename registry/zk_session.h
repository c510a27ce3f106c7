#pragma once
// One ZooKeeper session over the zookeeper_mt C client. The client calls back on its own threads;
// every callback here only posts to our io_context, where the completion runs. A session that
// expired stays expired: make a new ZkSession, never repair one.

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

typedef struct _zhandle zhandle_t;

namespace registry {

struct ZkStat {
  int64_t ephemeralOwner = 0;
  int32_t version = 0;
};

// ZooKeeper return codes we act on, named (the C client's ZOK, ZNONODE, ...).
struct ZkCode {
  static const int Ok, NoNode, NodeExists, NoAuth, ConnectionLoss, OperationTimeout,
      SessionExpired, SessionMoved, Closing, BadArguments, NotEmpty, InvalidAcl;
  // Worth another try after the session reconnects or is replaced.
  static bool retryable(int rc);
};

std::string zkError(int rc);

enum class ZkState { Connecting, Connected, Expired, AuthFailed, Closed };
std::string_view zkStateName(ZkState s);

class ZkSession {
 public:
  // onEvent runs on ioc for session state changes and watch triggers (type, path).
  using EventHandler = std::function<void(int type, ZkState state, const std::string& path)>;

  // digest: "user:password" or empty. Throws std::runtime_error if the handle cannot be made.
  ZkSession(boost::asio::io_context& ioc, const std::string& connect,
            std::chrono::milliseconds timeout, const std::string& digest, EventHandler onEvent);
  ~ZkSession();
  ZkSession(const ZkSession&) = delete;
  ZkSession& operator=(const ZkSession&) = delete;

  ZkState state() const { return state_; }
  int64_t sessionId() const;
  std::string connectedServer() const;
  bool secured() const { return secured_; }

  // Completions run on ioc, never after this session is destroyed.
  void create(const std::string& path, const std::string& data, bool ephemeralSequential,
              std::function<void(int rc, std::string created)> done);
  void remove(const std::string& path, std::function<void(int rc)> done);
  void exists(const std::string& path, bool watch, std::function<void(int rc, ZkStat)> done);
  void get(const std::string& path, bool watch,
           std::function<void(int rc, std::string data, ZkStat)> done);
  void children(const std::string& path, bool watch,
                std::function<void(int rc, std::vector<std::string>)> done);

  struct Shared;  // what the C client's threads may touch; defined in the .cpp

 private:
  boost::asio::io_context& ioc_;
  std::shared_ptr<Shared> shared_;
  zhandle_t* zh_ = nullptr;
  ZkState state_ = ZkState::Connecting;
  bool secured_ = false;
};

}  // namespace registry
