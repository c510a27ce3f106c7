#pragma once
// The ZooKeeper seam: our own types for session states, watch events and errors, and the session
// interface that the announcer and the resolver drive. The real session wraps the zookeeper_mt C
// client, whose API stays inside zk_session.cpp; unit tests drive a fake.

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace registry {

enum class ZkState { Connecting, Connected, Expired, AuthFailed, Closed };
std::string_view zkStateName(ZkState s);

// What the session reports: a change of its own state, or a watch that fired on a path.
enum class ZkEvent { Session, Created, Deleted, DataChanged, ChildrenChanged, NotWatching };

// The outcome of one operation; Ok is success, NoNode and NodeExists are often answers rather
// than failures. Codes we never act on apart are Other (the session logs the C client's number).
enum class ZkError {
  Ok,
  ConnectionLoss,
  OperationTimeout,
  SessionExpired,
  SessionMoved,
  NoAuth,
  BadArguments,
  InvalidAcl,
  NoNode,
  NodeExists,
  Other,
};

// The C client's wording ("connection loss", "not authenticated"...), which operators search for.
std::string_view zkErrorName(ZkError e);

// Worth another try once the connection is back or the session replaced (docs/zookeeper.md,
// "Lifecycle").
// Everything else (no auth, bad arguments, an invalid ACL) needs a person, not a retry.
bool retryable(ZkError e);

struct ZkStat {
  int64_t ephemeralOwner = 0;  // the session that owns an ephemeral node, else 0
  // Of a node's children: cversion counts their creations and deletions, pzxid is the
  // transaction of the last one. A list read with the same pair is the same list. -1: not known.
  int32_t cversion = -1;
  int64_t pzxid = -1;
  int32_t numChildren = 0;
};

enum class ZkNodeKind { Persistent, EphemeralSequential };

struct ZkSessionOptions {
  std::string connect;  // host:port[,host:port][/chroot]
  std::chrono::milliseconds timeout{10'000};
  std::string digest;  // "user:password" or empty; never logged
  // With a digest: persistent nodes it creates (a serverset's parents) are world-read,
  // creator-all as its ephemeral ones are. Without (the default) they are open, as Finagle's
  // announcer makes them, so that announcers with other credentials (or none) can add members.
  bool secureParents = false;
};

// One ZooKeeper session. Events and completions run on the io_context the session was made with,
// never inside the call that started them and never after the session is destroyed. A session
// that expired stays expired: make a new one, never repair it.
class ZkSession {
 public:
  using EventHandler = std::function<void(ZkEvent event, ZkState state, const std::string& path)>;

  virtual ~ZkSession() = default;

  virtual ZkState state() const = 0;
  virtual int64_t sessionId() const = 0;
  virtual std::string connectedServer() const = 0;  // "host:port", empty when not connected
  // Why no server of the ensemble could be reached lately, in the C client's words
  // ("Connection refused"); empty while connected, or when nothing failed yet.
  virtual std::string unreachableReason() const { return {}; }

  // With credentials, nodes are created world-readable and writable by their creator only.
  virtual void create(const std::string& path, const std::string& data, ZkNodeKind kind,
                      std::function<void(ZkError, std::string created)> done) = 0;
  virtual void remove(const std::string& path, std::function<void(ZkError)> done) = 0;
  virtual void exists(const std::string& path, bool watch,
                      std::function<void(ZkError, ZkStat)> done) = 0;
  virtual void get(const std::string& path, bool watch,
                   std::function<void(ZkError, std::string data)> done) = 0;
  virtual void children(const std::string& path, bool watch,
                        std::function<void(ZkError, std::vector<std::string> names)> done) = 0;
  // The children with the node's stat (ZooKeeper's getChildren2), in the same round trip: a
  // reader that kept the last stat recognises an unchanged list without comparing its names.
  virtual void children2(
      const std::string& path, bool watch,
      std::function<void(ZkError, std::vector<std::string> names, ZkStat stat)> done) = 0;
  // Forgets this session's watches on path where the client can, so that a reader that is gone
  // costs the ensemble nothing. Best effort: the real session leaves them on the server (Debian
  // 12's C client, 3.8.0, crashed in zoo_aremove_watches: see zk_session.cpp); a watch that fires
  // for no reader is dropped by SharedZkSessions.
  virtual void removeWatches(const std::string& path) = 0;
};

// Makes a session; an empty factory means the real one on the owner's io_context.
using ZkSessionFactory =
    std::function<std::unique_ptr<ZkSession>(const ZkSessionOptions&, ZkSession::EventHandler)>;

// The zookeeper_mt client: its threads only post to ioc. Throws std::runtime_error if the client
// cannot make a handle.
std::unique_ptr<ZkSession> openZkSession(boost::asio::io_context& ioc,
                                         const ZkSessionOptions& options,
                                         ZkSession::EventHandler onEvent);

}  // namespace registry
