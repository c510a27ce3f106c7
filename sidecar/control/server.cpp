// Wires the process together: workers and their handlers, the admin server, signals, TLS
// reloads, the announcement and the drain. Each of those is its own unit; this file only
// connects them and owns the control thread's io_context.
#include "control/server.h"

#include <metrics/metrics.h>
#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <iostream>

#include "control/admin.h"
#include "control/admin_views.h"
#include "control/announce.h"
#include "control/drain.h"
#include "control/startup.h"
#include "control/tls_reloader.h"
#include "http/access_log.h"
#include "http/plain_server.h"
#include "inbound/handler.h"
#include "net/listener.h"
#include "net/worker.h"
#include "outbound/directory.h"
#include "outbound/handler.h"
#include "thrift/handler.h"
#include "thrift/metrics.h"
#include "thrift/outbound.h"

namespace sidecar {

namespace {

// Admin connections open at once. Its users are a few probes and scrapers; the bound keeps a
// client that opens connections without end from taking the descriptors callers need, and fits
// (with the process's own ~20) in the 64 descriptors --max-connections 0 leaves aside. At the
// bound the connection waiting longest for a request is closed, so that a prober still gets in.
constexpr std::size_t kAdminMaxConnections = 32;
constexpr Duration kAdminIdleTimeout{30'000};

class Server {
 public:
  explicit Server(const SidecarConfig& config)
      : config_(config),
        registry_(metrics::makeRegistry()),
        metrics_(*registry_, config.workers),
        announcerMetrics_(*registry_),
        signals_(control_, SIGINT, SIGTERM, SIGHUP),
        abortTimer_(control_),
        tls_(control_, TlsFiles{config.tlsCert, config.tlsKey, config.tlsClientCa},
             config.tlsReloadInterval, metrics_,
             [this](const TlsContext& ctx) {
               for (auto* h : inbound_) {
                 h->setTls(ctx.ssl);
               }
               for (auto* h : thrift_) {
                 h->setTls(ctx.ssl);
               }
               reloadOutboundTls();
             }),
        drain_(control_, config.deregisterGrace, config.drainTimeout, drainSteps()),
        admin_(
            control_, [this](const PlainRequest& r) { return handleAdminRequest(r, hooks()); },
            adminOptions()) {}

  int run() {
    auto tls = tls_.initial();
    if (auto* error = std::get_if<std::string>(&tls)) {
      std::cerr << "sidecar: " << *error << "\n";
      return 2;
    }
    auto& ctx = std::get<TlsContext>(tls);

    auto upstream = resolveOne(control_, config_.upstream);
    if (!upstream) {
      std::cerr << "sidecar: --upstream: cannot resolve '" << config_.upstream.host << "'\n";
      return 2;
    }
    auto listen = resolveOne(control_, config_.listen);
    auto adminListen = resolveOne(control_, config_.adminListen);
    if (!listen || !adminListen) {
      std::cerr << "sidecar: " << (listen ? "--admin-listen" : "--listen") << ": cannot resolve '"
                << (listen ? config_.adminListen.host : config_.listen.host) << "'\n";
      return 2;
    }
    if (!config_.accessLog.empty()) {
      try {
        accessLog_ = std::make_unique<AccessLog>(config_.accessLog, metrics_.accessLogDropped);
      } catch (const std::exception& e) {
        std::cerr << "sidecar: --access-log '" << config_.accessLog << "': " << e.what() << "\n";
        return 2;
      }
    }
    warnIfReadableByOthers(config_.tlsKey);
    ProxyLimits limits = config_.limits;
    limits.maxConnections = resolveMaxConnections(limits.maxConnections);
    (*workerShared_.connections)[Budget::listen].limit = limits.maxConnections;
    (*workerShared_.connections)[Budget::thrift].limit =
        resolveMaxConnections(limits.thriftMaxConnections);
    (*workerShared_.connections)[Budget::outbound].limit =
        resolveMaxConnections(limits.outboundMaxConnections);
    workerShared_.metrics = &metrics_;
    workerShared_.busyPoll = config_.busyPoll;
    workerShared_.accessLog = accessLog_.get();
    inboundShared_.emplace(InboundShared{limits, IdentityAllowList(config_.allowIdentities),
                                         &metrics_, StaticCluster("local", {*upstream}),
                                         config_.upstream.str()});

    if (auto ec = probeUnshared(control_, *listen)) {
      std::cerr << "sidecar: --listen " << config_.listen.str() << ": " << ec.message() << "\n";
      return 2;
    }
    std::optional<tcp::endpoint> outboundListen;
    std::shared_ptr<asio::ssl::context> outboundTls;
    if (config_.outbound) {
      const auto& o = *config_.outbound;
      auto client = makeClientTlsContext(outboundFiles(), "--outbound-ca");
      if (auto* error = std::get_if<std::string>(&client)) {
        std::cerr << "sidecar: " << *error << "\n";
        return 2;
      }
      outboundTls = std::get<TlsContext>(client).ssl;
      if (o.httpListener) {
        outboundListen = resolveOne(control_, o.listen);
        if (!outboundListen) {
          std::cerr << "sidecar: --outbound-listen: cannot resolve '" << o.listen.host << "'\n";
          return 2;
        }
        if (auto ec = probeUnshared(control_, *outboundListen)) {
          std::cerr << "sidecar: --outbound-listen " << o.listen.str() << ": " << ec.message()
                    << "\n";
          return 2;
        }
      }
      const std::size_t slots =
          o.routes.size() + o.thriftRoutes.size() + (o.routePrefix.empty() ? 0 : o.maxRoutes);
      outboundMetrics_.emplace(*registry_, std::max<std::size_t>(slots, 1), config_.workers);
      outboundShared_.emplace(OutboundShared{
          o, limits, &*outboundMetrics_,
          [this](std::string name) {
            asio::post(control_, [this, name = std::move(name)] { directory_->ensure(name); });
          },
          [this](unsigned worker, const std::string& route, std::vector<MemberView> views,
                 std::uint64_t ejections, bool used) {
            directory_->report(worker, route, std::move(views), ejections, used);
          }});
    }
    try {
      tcp::endpoint bound = *listen;
      for (unsigned i = 0; i < config_.workers; ++i) {
        auto& w = *workers_.emplace_back(std::make_unique<Worker>(workerShared_, i));
        auto handler =
            std::make_unique<InboundHandler>(w, *inboundShared_, config_.workers, ctx.ssl);
        inbound_.push_back(handler.get());
        w.addListener(bound, std::move(handler), Budget::listen);
        bound = w.localEndpoint();  // port 0 becomes the port the first one got
      }
    } catch (const boost::system::system_error& e) {
      std::cerr << "sidecar: --listen " << config_.listen.str() << ": " << e.code().message()
                << "\n";
      return 2;
    }
    if (outboundShared_ && outboundListen) {
      try {
        tcp::endpoint bound = *outboundListen;
        for (auto& w : workers_) {
          auto handler = std::make_unique<OutboundHandler>(*w, *outboundShared_, outboundTls);
          outbound_.push_back(handler.get());
          outboundListener_ = w->addListener(bound, std::move(handler), Budget::outbound);
          bound = w->localEndpoint(outboundListener_);
        }
      } catch (const boost::system::system_error& e) {
        std::cerr << "sidecar: --outbound-listen " << config_.outbound->listen.str() << ": "
                  << e.code().message() << "\n";
        return 2;
      }
    }
    if (outboundShared_) {
      if (!startThriftRoutes(outboundTls)) {
        return 2;
      }
      directory_.emplace(
          control_, *config_.outbound, config_.outbound->zkSessionTimeout, *outboundMetrics_,
          [this](std::shared_ptr<const RouteInfo> info, std::shared_ptr<const MemberSet> members) {
            if (isThriftRouteName(info->name)) {
              for (auto* h : thriftOut_) {
                h->setRoute(info, members);  // the port's own handlers take it
              }
              return;
            }
            for (auto* h : outbound_) {
              h->setRoute(info, members);
            }
          },
          [this](std::shared_ptr<const RouteInfo> info) {
            // Only prefix routes expire, and they are all HTTP routes.
            for (auto* h : outbound_) {
              h->dropRoute(info);
            }
          });
    }
    if (config_.thrift && !startThrift(limits, ctx)) {
      return 2;
    }
    try {
      admin_.listen(*adminListen);
    } catch (const boost::system::system_error& e) {
      std::cerr << "sidecar: --admin-listen " << config_.adminListen.str() << ": "
                << e.code().message() << "\n";
      return 2;
    }

    if (directory_) {
      directory_->start();  // the declared routes reach the workers before their first request
    }
    for (auto& w : workers_) {
      w->start();
    }
    admin_.start();
    if (config_.announce) {
      announcement_.emplace(control_, *config_.announce, *upstream,
                            AnnouncedPorts{workers_.front()->localEndpoint().port(),
                                           admin_.localEndpoint().port(), thriftPort_},
                            announcerMetrics_);
    }
    waitForSignal();
    tls_.start();
    started_ = std::chrono::system_clock::now();
    ready_ = true;
    spdlog::info(
        "event=started listen={} admin={} upstream={} outbound={} thrift_listen={} "
        "thrift_routes={} workers={} version={}",
        endpointText(workers_.front()->localEndpoint()), endpointText(admin_.localEndpoint()),
        endpointText(*upstream),
        outbound_.empty() ? std::string("off")
                          : endpointText(workers_.front()->localEndpoint(outboundListener_)),
        thriftListen_.empty() ? std::string("off") : thriftListen_,
        thriftRouteListens_.empty() ? std::string("off") : thriftRouteListens_, workers_.size(),
        SIDECAR_VERSION);
    control_.run();
    for (auto& w : workers_) {
      w->stop();
    }
    spdlog::info("event=stopped");
    return 0;
  }

 private:
  PlainHttpServer::Options adminOptions() {
    return PlainHttpServer::Options{
        .idleTimeout = kAdminIdleTimeout,
        .maxConnections = kAdminMaxConnections,
        .name = "admin",
        .openChanged =
            [this](std::size_t open) {
              metrics_.adminConnectionsOpen->Set(static_cast<double>(open));
            },
        .refused = [this] { metrics_.adminConnectionsRefused->Increment(); },
        .evicted = [this] { metrics_.adminConnectionsEvicted->Increment(); },
    };
  }

  AdminHooks hooks() {
    return AdminHooks{
        .ready =
            [this] {
              return ready_ && !drain_.draining() && (!announcement_ || announcement_->announced());
            },
        .draining = [this] { return drain_.draining(); },
        .quit =
            [this](std::optional<Duration> grace) {
              asio::post(control_, [this, grace] { beginShutdown("quitquitquit", grace); });
            },
        .abort =
            [this] {
              spdlog::warn("event=abort source=abortabortabort");
              abortTimer_.expires_after(std::chrono::milliseconds(50));
              abortTimer_.async_wait([](auto) { std::_Exit(1); });
            },
        .metricsText =
            [this] {
              std::vector<const prometheus::Collectable*> sources{registry_.get(),
                                                                  &metrics_.collector};
              if (directory_) {
                directory_->refreshGauges();
                sources.push_back(&outboundMetrics_->collector);
              }
              if (thriftMetrics_) {
                sources.push_back(&thriftMetrics_->methods);
              }
              return metrics::serializeText(sources);
            },
        .metricsJson =
            [this] {
              return finagleMetrics(metrics_, announcerMetrics_, drain_.draining(),
                                    [this](boost::json::object& o) {
                                      if (directory_) {
                                        directory_->addFinagleMetrics(o);
                                      }
                                      if (thriftMetrics_) {
                                        addThriftFinagleMetrics(o, *thriftMetrics_);
                                      }
                                    });
            },
        .serverInfoJson = [this] { return serverInfoJson(started_); },
        .announcerJson =
            [this] {
              return announcement_ ? announcement_->statusJson()
                                   : std::string("{\"enabled\":false}\n");
            },
        .clientsJson =
            [this] { return directory_ ? directory_->clientsJson() : "{\"clients\":[]}\n"; },
    };
  }

  // The inbound Thrift listener (--thrift-listen) on every worker; false after printing why not.
  bool startThrift(const ProxyLimits& limits, const TlsContext& ctx) {
    const auto& t = *config_.thrift;
    auto local = resolveOne(control_, t.upstream);
    if (!local) {
      std::cerr << "sidecar: --thrift-upstream: cannot resolve '" << t.upstream.host << "'\n";
      return false;
    }
    auto listen = resolveOne(control_, t.listen);
    if (!listen) {
      std::cerr << "sidecar: --thrift-listen: cannot resolve '" << t.listen.host << "'\n";
      return false;
    }
    if (auto ec = probeUnshared(control_, *listen)) {
      std::cerr << "sidecar: --thrift-listen " << t.listen.str() << ": " << ec.message() << "\n";
      return false;
    }
    thriftMetrics_.emplace(*registry_, config_.workers);
    thriftShared_.emplace(ThriftShared{limits, IdentityAllowList(config_.allowIdentities),
                                       &*thriftMetrics_, *local, t.maxFrame,
                                       std::max<std::size_t>(t.maxBuffered, t.maxFrame + 4)});
    try {
      tcp::endpoint bound = *listen;
      for (auto& w : workers_) {
        auto handler = std::make_unique<ThriftHandler>(*w, *thriftShared_, ctx.ssl);
        thrift_.push_back(handler.get());
        const auto index = w->addListener(bound, std::move(handler), Budget::thrift);
        bound = w->localEndpoint(index);
      }
      thriftPort_ = bound.port();
      thriftListen_ = endpointText(bound);
    } catch (const boost::system::system_error& e) {
      std::cerr << "sidecar: --thrift-listen " << t.listen.str() << ": " << e.code().message()
                << "\n";
      return false;
    }
    return true;
  }

  // A listener per --thrift-route on every worker; false after printing why not.
  bool startThriftRoutes(const std::shared_ptr<asio::ssl::context>& outboundTls) {
    const auto& routes = config_.outbound->thriftRoutes;
    if (routes.empty()) {
      return true;
    }
    thriftOutMetrics_.emplace(*registry_);
    for (const auto& t : routes) {
      auto listen = resolveOne(control_, t.listen);
      if (!listen) {
        std::cerr << "sidecar: --thrift-route: cannot resolve '" << t.listen.host << "'\n";
        return false;
      }
      if (auto ec = probeUnshared(control_, *listen)) {
        std::cerr << "sidecar: --thrift-route " << t.listen.str() << ": " << ec.message() << "\n";
        return false;
      }
      try {
        for (auto& w : workers_) {
          auto handler = std::make_unique<ThriftOutboundHandler>(
              *w, *outboundShared_, *thriftOutMetrics_, t, outboundTls);
          thriftOut_.push_back(handler.get());
          w->addListener(*listen, std::move(handler), Budget::outbound);
        }
        thriftRouteListens_ += (thriftRouteListens_.empty() ? "" : ",") + endpointText(*listen);
      } catch (const boost::system::system_error& e) {
        std::cerr << "sidecar: --thrift-route " << t.listen.str() << ": " << e.code().message()
                  << "\n";
        return false;
      }
    }
    return true;
  }

  TlsFiles outboundFiles() const {
    return TlsFiles{config_.tlsCert, config_.tlsKey, config_.outbound->caFile};
  }

  // The sidecar's own certificate, rotated, is presented by new connections to members too.
  void reloadOutboundTls() {
    if (outbound_.empty() && thriftOut_.empty()) {
      return;
    }
    auto client = makeClientTlsContext(outboundFiles(), "--outbound-ca");
    if (auto* error = std::get_if<std::string>(&client)) {
      spdlog::error("event=tls_reload_failed side=outbound error=\"{}\" action=kept_previous",
                    *error);
      return;
    }
    for (auto* h : outbound_) {
      h->setTls(std::get<TlsContext>(client).ssl);
    }
    for (auto* h : thriftOut_) {
      h->setTls(std::get<TlsContext>(client).ssl);
    }
  }

  DrainController::Steps drainSteps() {
    using Withdraw = decltype(DrainController::Steps::withdraw);
    return DrainController::Steps{
        // A sidecar that announces nothing has nothing to withdraw: it drains at once.
        .withdraw =
            !config_.announce ? Withdraw{} : Withdraw([this](std::function<void(bool)> done) {
              if (announcement_) {
                announcement_->withdraw(std::move(done));
              } else {
                done(false);  // a signal before the announcement started
              }
            }),
        .drainWorkers =
            [this](std::function<void()> oneDrained) {
              for (auto& w : workers_) {
                w->drain(oneDrained);
              }
              return workers_.size();
            },
        .finished =
            [this](const char*) {
              signals_.cancel();
              announcement_.reset();  // closes the session (its member is already gone)
              control_.stop();
            },
    };
  }

  void waitForSignal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) {
        return;
      }
      if (signo == SIGHUP) {
        tls_.reload("sighup");
      } else if (drain_.draining()) {
        spdlog::warn("event=forced_exit signal={}", signo);
        std::_Exit(1);
      } else {
        beginShutdown(signo == SIGTERM ? "sigterm" : "sigint", std::nullopt);
      }
      waitForSignal();
    });
  }

  void beginShutdown(const char* source, std::optional<Duration> grace) {
    if (drain_.draining()) {
      return;
    }
    metrics_.draining->Set(1);
    tls_.stop();
    drain_.begin(source, grace);
  }

  const SidecarConfig& config_;
  asio::io_context control_{1};
  std::shared_ptr<prometheus::Registry> registry_;
  ProxyMetrics metrics_;
  AnnouncerMetrics announcerMetrics_;
  std::unique_ptr<AccessLog> accessLog_;  // before the workers: they write to it until they end
  WorkerShared workerShared_;
  std::optional<InboundShared> inboundShared_;
  asio::signal_set signals_;
  asio::steady_timer abortTimer_;
  TlsReloader tls_;
  DrainController drain_;
  PlainHttpServer admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<InboundHandler*> inbound_;  // owned by the workers, one each
  std::optional<OutboundMetrics> outboundMetrics_;
  std::optional<OutboundShared> outboundShared_;
  std::vector<OutboundHandler*> outbound_;  // owned by the workers, one each
  std::size_t outboundListener_ = 0;        // its index in each worker
  std::optional<ThriftOutboundMetrics> thriftOutMetrics_;
  std::vector<ThriftOutboundHandler*> thriftOut_;  // per --thrift-route, one per worker each
  std::optional<ThriftMetrics> thriftMetrics_;
  std::optional<ThriftShared> thriftShared_;
  std::vector<ThriftHandler*> thrift_;  // owned by the workers, one each
  std::optional<uint16_t> thriftPort_;  // as bound, for the announcement
  std::string thriftListen_;            // as bound, for the started line
  std::string thriftRouteListens_;      // the --thrift-route ports, comma-separated
  std::optional<RouteDirectory> directory_;
  std::optional<Announcement> announcement_;
  std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
  bool ready_ = false;
};

}  // namespace

int runSidecar(const SidecarConfig& config) {
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  spdlog::set_level(spdlog::level::from_str(config.logLevel));
  Server server(config);
  return server.run();
}

}  // namespace sidecar
