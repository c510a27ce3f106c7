#pragma once
// The outbound handler: the local service's plain HTTP/1.1 calls on --outbound-listen, one
// instance per worker. The Host header names a route; the route's members come from the control
// thread (outbound/directory.h) as immutable snapshots; each request is balanced over them
// (P2C peak EWMA) and carried over mTLS, with retries on another member within a budget.

#include <spdlog/logger.h>

#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "h2/client_pool.h"
#include "net/log_limiter.h"
#include "net/tls_stream.h"
#include "net/worker.h"
#include "outbound/metrics.h"
#include "trace/tracer.h"
#include "upstream/addr.h"
#include "upstream/balancer.h"
#include "upstream/pool.h"
#include "upstream/retry_budget.h"

namespace sidecar {

inline TcpSocket& lowestSocket(TlsStream& s) { return s.lowest_layer().socket(); }

// A route as the control thread made it; never changes. Its members are an Addr (upstream/addr.h),
// replaced whole.
struct RouteInfo {
  std::string name;
  std::string identity;  // the callee's certificate must carry it (empty: any)
  std::size_t slot = 0;  // its series in OutboundMetrics
};

// What every worker's outbound handler shares, read-only.
struct OutboundShared {
  OutboundConfig config;
  ProxyLimits limits;  // head size, head and idle timeouts, underscore policy
  OutboundMetrics* metrics;
  // Asks the control thread for the route NAME (from --route-prefix); thread-safe. The answer
  // comes back through OutboundHandler::setRoute on every worker.
  std::function<void(std::string name)> requestRoute;
  // Each worker's balancer views, once a second (thread-safe), for /admin/clients and gauges;
  // used: the route had calls since the last report (a prefix route unused expires).
  std::function<void(unsigned worker, const std::string& route, std::vector<MemberView> views,
                     std::uint64_t ejections, bool used)>
      report;
  trace::Tracer* tracer = nullptr;  // none: tracing is off (no --zipkin-url)
};

enum class OutboundLogEvent : unsigned { badRequest, noRoute, noMembers, memberFailed, count };

class OutboundHandler final : public ConnectionHandler {
 public:
  OutboundHandler(Worker& worker, const OutboundShared& shared,
                  std::shared_ptr<asio::ssl::context> tls);

  void accepted(TcpSocket socket) override;
  void tick() override;
  void clear() override;

  // Thread-safe: a route made or its members changed.
  void setRoute(std::shared_ptr<const RouteInfo> info, std::shared_ptr<const Addr> addr);
  // Thread-safe: the route the control thread made as info expired. Calls in flight finish on it;
  // a newer route of the same name (asked for meanwhile) stays.
  void dropRoute(std::shared_ptr<const RouteInfo> info);
  // Thread-safe: new connections to members use ctx (a rotated certificate).
  void setTls(std::shared_ptr<asio::ssl::context> ctx);

  // Worker-thread only, for sessions.
  // A connection is the route's: it was verified against the route's expected identity, so
  // another route to the same address (expecting someone else) never reuses it, nor its TLS
  // session.
  struct Route {
    Route(std::shared_ptr<const RouteInfo> i, std::shared_ptr<const Addr> a, std::uint64_t seed,
          const PoolSettings& pool)
        : info(std::move(i)), addr(std::move(a)), balancer(seed), pool(pool) {}
    std::shared_ptr<const RouteInfo> info;
    std::shared_ptr<const Addr> addr;  // its members
    P2cPeakEwma balancer;
    // The address the balancer holds the members of, and the route it came for: a new one that
    // is a delta from it is applied as such.
    std::shared_ptr<const Addr> balanced;
    std::shared_ptr<const RouteInfo> balancedFor;
    RetryBudget budget;
    BasicConnectionPool<TlsStream> pool;
    std::vector<std::pair<tcp::endpoint, TlsStream::Session>> sessions;
    std::vector<SteadyTimer*> waiters;  // requests waiting for the first resolution
    std::uint64_t ejectionsSeen = 0;
    LogLimiter refusedLog;            // members refused for the identity their certificate carries
    std::uint64_t calls = 0;          // routed here by this worker (a plain count: one thread)
    std::uint64_t callsReported = 0;  // as of the last report
    // HTTP/2 to members (the local service's h2c calls): a few connections per member, each
    // stream balanced on its own. Pools of a rotated certificate finish their streams first.
    std::map<tcp::endpoint, std::unique_ptr<h2::ClientPool>> h2Pools;
    std::vector<std::unique_ptr<h2::ClientPool>> retiredH2;
    h2::ClientPool& h2Pool(const tcp::endpoint& member, OutboundHandler& handler);
    // The member's pool whose last connection found it speaks only HTTP/1.1, retired ones too (a
    // certificate rotation may retire the pool while that handshake runs); null if none.
    h2::ClientPool* refusingH2(const tcp::endpoint& member);
    // Members that chose HTTP/1.1 when offered h2 (ALPN), and until when that is believed: the
    // local service's HTTP/2 calls go to them over HTTP/1.1 meanwhile, then h2 is offered again
    // (a member restarted with HTTP/2 on is found within kHttp1Recheck).
    static constexpr Duration kHttp1Recheck{60'000};
    std::map<tcp::endpoint, std::chrono::steady_clock::time_point> http1Members;
    bool speaksHttp1(const tcp::endpoint& member, std::chrono::steady_clock::time_point now) const {
      auto it = http1Members.find(member);
      return it != http1Members.end() && now < it->second;
    }
    // A TLS session to resume with a member, if one is kept.
    SSL_SESSION* session(const tcp::endpoint& e);
    void keepSession(const tcp::endpoint& e, TlsStream::Session s);
    // The control thread's new view of the route: its members go to the balancer, and calls
    // waiting for the first resolution go on once it is bound.
    void update(std::shared_ptr<const RouteInfo> i, std::shared_ptr<const Addr> a);
    // A route made on first use has no members until its resolver first answers: a call waits
    // for that (and only that call), up to timeout (--resolve-timeout). Every protocol's.
    awaitable<void> awaitResolution(asio::io_context& ioc, Duration timeout);
    // Once a second: the pool swept, new ejections counted, the balancer's view reported.
    void tick(unsigned worker, const OutboundShared& shared);
    // A new certificate: connections and sessions of the old one are not used again.
    void forgetTls() {
      sessions.clear();
      pool.clear();
      for (auto& [member, p] : h2Pools) {
        p->retire(std::nullopt);
        retiredH2.push_back(std::move(p));
      }
      h2Pools.clear();
    }
    // Per worker and route: a run can be repeated, and workers do not pick in step.
    static std::uint64_t seed(const std::string& route, unsigned worker) {
      return std::hash<std::string>{}(route) ^ (0x9e3779b97f4a7c15ull * (worker + 1));
    }
  };
  // The route for name, or none; with --route-prefix and mayMake a missing one is asked for (and
  // returned, waiting for its members) unless --max-routes new ones are awaited already. Shared:
  // a call keeps its route while the control thread expires it.
  std::shared_ptr<Route> route(const std::string& name, bool mayMake);
  Worker& worker() { return worker_; }
  const OutboundShared& shared() const { return shared_; }
  const std::shared_ptr<asio::ssl::context>& tls() const { return tls_; }
  // The deadlines of every route's HTTP/2 connections to members (from a sweep).
  void sweepH2(std::chrono::steady_clock::time_point now);
  LogLimiter& logLimiter(OutboundLogEvent e) { return logLimiters_[static_cast<unsigned>(e)]; }
  // This worker's view of the gRPC method names (sidecar_outbound_grpc_requests_total).
  metrics::NameSlots& grpcMethods() { return grpcMethods_; }

 private:
  Worker& worker_;
  const OutboundShared& shared_;
  std::shared_ptr<asio::ssl::context> tls_;
  Route& add(std::shared_ptr<const RouteInfo> info, std::shared_ptr<const Addr> addr);

  std::size_t idleToMembers_ = 0;  // all routes' pools together (declared before them)
  std::unordered_map<std::string, std::shared_ptr<Route>> routes_;
  std::array<LogLimiter, static_cast<unsigned>(OutboundLogEvent::count)> logLimiters_{};
  metrics::NameSlots grpcMethods_{shared_.metrics->grpc.table};
};

}  // namespace sidecar
