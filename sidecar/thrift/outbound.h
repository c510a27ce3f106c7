#pragma once
// Outbound Thrift routes (--thrift-route 127.0.0.1:PORT=DEST): the local Thrift client's framed
// calls on a loopback port, one handler per route and worker. The route is a RouteDirectory
// route like the HTTP ones (named thrift:PORT), and each worker keeps the outbound mesh's
// per-route state for it (OutboundHandler::Route: P2C peak EWMA with failure accrual, retry
// budget, pool of mTLS connections to members, TLS sessions). Each call is balanced on its own;
// calls on one local connection are answered in their order.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <array>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/config.h"
#include "net/log_limiter.h"
#include "net/worker.h"
#include "outbound/handler.h"

namespace sidecar {

// What only Thrift routes count; the rest is the mesh's per-route metrics (OutboundMetrics).
class ThriftOutboundMetrics {
 public:
  explicit ThriftOutboundMetrics(prometheus::Registry& registry);

  struct Route {
    prometheus::Counter* framesTooLarge;  // sidecar_thrift_outbound_frames_refused_total{reason}
    prometheus::Counter* framesNotThrift;
    prometheus::Counter* framesMalformed;  // a CALL whose frame is not exactly one whole message
    prometheus::Counter* framesBadHeader;  // an upgraded client's RequestHeader unreadable
    prometheus::Counter* probes;           // sidecar_thrift_outbound_probes_total
    // sidecar_thrift_outbound_upgrades_total{route, result}: our probe on each new connection
    // to a member, answered REPLY (upgraded: TTwitter) or not (refused: plain framed Thrift).
    prometheus::Counter* upgraded;
    prometheus::Counter* upgradeRefused;
  };
  // The route's series, made once at start-up.
  Route route(const std::string& name);

 private:
  prometheus::Family<prometheus::Counter>* refused_;
  prometheus::Family<prometheus::Counter>* probes_;
  prometheus::Family<prometheus::Counter>* upgrades_;
};

// Thrift routes' names cannot be a Host's service name (they hold ':').
inline bool isThriftRouteName(std::string_view name) { return name.starts_with("thrift:"); }

enum class ThriftOutboundLogEvent : unsigned { badFrame, noMembers, memberFailed, count };

class ThriftOutboundHandler final : public ConnectionHandler {
 public:
  ThriftOutboundHandler(Worker& worker, const OutboundShared& shared,
                        ThriftOutboundMetrics& metrics, const ThriftRouteConfig& config,
                        const std::string& clientId, std::shared_ptr<asio::ssl::context> tls);

  void accepted(TcpSocket socket) override;
  void tick() override;
  void clear() override;

  // Thread-safe: this handler's route made or its members changed (other routes are ignored).
  void setRoute(std::shared_ptr<const RouteInfo> info, std::shared_ptr<const Addr> addr);
  // Thread-safe: new connections to members use ctx (a rotated certificate).
  void setTls(std::shared_ptr<asio::ssl::context> ctx);

  // Worker-thread only, for sessions. None until the control thread first published the route.
  OutboundHandler::Route* route() { return route_ ? &*route_ : nullptr; }
  Worker& worker() { return worker_; }
  const OutboundShared& shared() const { return shared_; }
  const ThriftRouteConfig& config() const { return config_; }
  // The client_id our RequestHeaders carry (--thrift-client-id).
  const std::string& clientId() const { return clientId_; }
  // Whether the member connection on socket fd took our TTwitter upgrade. Every connection this
  // handler's pool holds was opened (and probed) by it, and a reused descriptor is probed again
  // before use, so an entry is always its connection's own. Bounded by the descriptors in use.
  void setUpgraded(int fd, bool upgraded) { upgraded_[fd] = upgraded; }
  bool upgraded(int fd) const {
    const auto it = upgraded_.find(fd);
    return it != upgraded_.end() && it->second;
  }
  const ThriftOutboundMetrics::Route& metrics() const { return metrics_; }
  const std::shared_ptr<asio::ssl::context>& tls() const { return tls_; }
  LogLimiter& logLimiter(ThriftOutboundLogEvent e) {
    return logLimiters_[static_cast<unsigned>(e)];
  }

 private:
  Worker& worker_;
  const OutboundShared& shared_;
  const ThriftRouteConfig& config_;
  const std::string& clientId_;
  std::unordered_map<int, bool> upgraded_;
  ThriftOutboundMetrics::Route metrics_;
  std::shared_ptr<asio::ssl::context> tls_;
  std::optional<OutboundHandler::Route> route_;
  std::array<LogLimiter, static_cast<unsigned>(ThriftOutboundLogEvent::count)> logLimiters_{};
};

}  // namespace sidecar
