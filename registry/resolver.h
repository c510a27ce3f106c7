#pragma once
// Reads a serverset and keeps it current with watches: what Finagle's zk2! resolver does, for our
// own tools and the outbound mesh to come.

#include "serverset.h"
#include "zk_session.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
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

class ServersetResolver {
 public:
  using OnUpdate = std::function<void(const ServersetSnapshot&)>;

  ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                    std::chrono::milliseconds sessionTimeout, OnUpdate onUpdate);
  void start();

 private:
  struct Cached {
    std::optional<ResolvedMember> member;  // none: not ALIVE, other shard, or no such endpoint
    std::string malformed;
  };
  void openSession();
  void onEvent(ZkEvent event, ZkState state, const std::string& path);
  void refresh();
  void publish();

  boost::asio::io_context& ioc_;
  ServersetAddress address_;
  std::chrono::milliseconds sessionTimeout_;
  OnUpdate onUpdate_;
  std::unique_ptr<ZkSession> session_;
  boost::asio::steady_timer retryTimer_;    // re-opens an expired session
  boost::asio::steady_timer refreshTimer_;  // lists again after a member could not be read
  std::map<std::string, Cached> cache_;
  uint64_t generation_ = 0;  // a newer listing makes older fetches moot
};

// Picks what a reader uses from one decoded member; nullopt when it does not qualify.
std::optional<ResolvedMember> selectMember(const std::string& name, const ServiceInstance& instance,
                                           const ServersetAddress& address);

}  // namespace registry
