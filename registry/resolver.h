#pragma once
// Reads a serverset and keeps it current with watches: what Finagle's zk2! resolver does, for
// `sidecar resolve` and the outbound mesh. One resolver per serverset, used on the thread of its
// io_context (the control thread's), where every callback runs; what it publishes is an immutable
// snapshot that other threads may share.

#include "detail/one_shot_timer.h"
#include "serverset.h"
#include "zk_session.h"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace registry {

// One usable member: ALIVE, in the wanted shard, with the wanted endpoint.
struct ResolvedMember {
  std::string name;  // member_0000000007
  Endpoint endpoint;
  std::optional<int32_t> shard;
  bool operator==(const ResolvedMember&) const = default;
};

struct ServersetSnapshot {
  std::map<std::string, ResolvedMember> members;     // by node name
  std::map<std::string, std::string> malformed;      // node name -> why it was skipped
};

struct ResolverOptions {
  std::chrono::milliseconds sessionTimeout{10'000};
  // Before listing again after a read failed, and before replacing an expired session.
  std::chrono::milliseconds retryDelay{1'000};
  ZkSessionFactory connect{};  // empty: the ZooKeeper C client on the resolver's io_context
};

class ServersetResolver {
 public:
  // Called with each complete listing; a listing with a member that could not be read is never
  // published, the last complete one stays.
  using OnUpdate = std::function<void(const ServersetSnapshot&)>;
  // Called when stale() changes.
  using OnStale = std::function<void(bool stale)>;

  ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                    std::chrono::milliseconds sessionTimeout, OnUpdate onUpdate);
  ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                    ResolverOptions options, OnUpdate onUpdate, OnStale onStale = {});
  // Closes the session; no callback runs afterwards. Published snapshots stay valid.
  ~ServersetResolver();
  ServersetResolver(const ServersetResolver&) = delete;
  ServersetResolver& operator=(const ServersetResolver&) = delete;

  void start();

  // The last complete listing; null until there is one.
  std::shared_ptr<const ServersetSnapshot> snapshot() const { return snapshot_; }
  // The snapshot may be out of date: there is none yet, the session is disconnected or expired,
  // or the last listing could not be read whole. It keeps serving; the caller says it is stale.
  bool stale() const { return stale_; }
  // Why no ZooKeeper server could be reached lately (ZkSession::unreachableReason), or empty.
  std::string unreachableReason() const {
    return session_ ? session_->unreachableReason() : std::string();
  }

 private:
  struct Cached {
    std::optional<ResolvedMember> member;  // none: not ALIVE, other shard, or no such endpoint
    std::string malformed;
  };
  void openSession();
  void onEvent(ZkEvent event, ZkState state, const std::string& path);
  void refresh();
  void readFailed(const char* what, ZkError error, std::size_t unread);
  void publish();
  void setStale(bool stale, std::string_view reason);

  ServersetAddress address_;
  ResolverOptions options_;
  OnUpdate onUpdate_;
  OnStale onStale_;
  std::unique_ptr<ZkSession> session_;
  detail::OneShotTimer reopenTimer_;   // replaces an expired session
  detail::OneShotTimer refreshTimer_;  // lists again after a read failed
  std::map<std::string, Cached> cache_;
  std::shared_ptr<const ServersetSnapshot> snapshot_;
  uint64_t generation_ = 0;  // a newer listing makes older fetches moot
  bool stale_ = true;
};

// Picks what a reader uses from one decoded member; nullopt when it does not qualify.
std::optional<ResolvedMember> selectMember(const std::string& name, const ServiceInstance& instance,
                                           const ServersetAddress& address);

}  // namespace registry
