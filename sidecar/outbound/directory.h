#pragma once
// The outbound routes on the control thread: one per --route and per --thrift-route at start,
// and one per name under --route-prefix when a worker first asks. A serverset route reads its
// members through a resolver (registry/) that every route naming the same serverset (ensembles,
// path, endpoint) shares: one watch and one listing per change however many routes name it, each
// route still holding its own sudden losses and publishing its own set. The member sets go to every
// worker as immutable snapshots; the data path
// never waits on ZooKeeper, and keeps the last known members while ZooKeeper cannot be read. A
// member announced with a host name becomes one member per address the name has (outbound/names.h),
// looked up off the control thread and again every --dns-refresh; a name without an address is left
// out.

#include <registry/resolver.h>
#include <registry/shared_session.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "outbound/handler.h"
#include "outbound/metrics.h"
#include "outbound/names.h"

namespace sidecar {

class RouteDirectory {
 public:
  using Clock = std::chrono::steady_clock;
  using Publish =
      std::function<void(std::shared_ptr<const RouteInfo>, std::shared_ptr<const Addr>)>;
  using Retract = std::function<void(std::shared_ptr<const RouteInfo>)>;
  // A prefix route without members this long is removed (a negative entry's life).
  static constexpr std::chrono::seconds kNegativeLife{5};

  // zk: makes the resolvers' ZooKeeper sessions (empty: the ZooKeeper C client; a test's fake).
  RouteDirectory(boost::asio::io_context& control, const OutboundConfig& config,
                 Duration zkSessionTimeout, OutboundMetrics& metrics, Publish publish,
                 Retract retract, registry::ZkSessionFactory zk = {});
  ~RouteDirectory();
  // Makes the declared routes, HTTP then Thrift (control thread).
  void start();
  // Makes the route NAME under --route-prefix if it does not exist, else publishes it again
  // (control thread; workers ask through a post). At --max-routes the least recently used prefix
  // route (one without members first) makes room.
  void ensure(const std::string& name);
  // A worker's view of a route's members (any thread; once a second per worker); used: it had
  // calls since the last report.
  void report(unsigned worker, const std::string& route, std::vector<MemberView> views,
              std::uint64_t ejections, bool used);
  // Removes the prefix routes whose life is over (control thread; once a second).
  void expire(Clock::time_point now);
  // /admin/clients: per route, its destination, members and their state (control thread).
  std::string clientsJson();
  // Finagle's clnt/<route>/... names for /admin/metrics.json (control thread).
  void addFinagleMetrics(boost::json::object& o);
  // Brings the per-route gauges up to date before a scrape (control thread).
  void refreshGauges();

 private:
  struct Source;
  struct Runtime {
    RouteConfig config;
    std::shared_ptr<const RouteInfo> info;
    std::shared_ptr<const Addr> addr;           // its members, as published
    Source* source = nullptr;                   // a serverset route's shared resolver
    std::vector<registry::Endpoint> wanted;     // as announced (a static route: its members)
    bool listed = false;                        // the source answered (a static route: at once)
    std::map<std::string, std::string> hostOf;  // a member's address -> the name it came from
    std::size_t unresolved = 0;                 // wanted members whose name has no address
    std::size_t malformed = 0;
    bool prefix = false;             // made from --route-prefix: expires
    Clock::time_point usedAt{};      // made, or last called (as the workers report)
    Clock::time_point emptySince{};  // without members since (or made)
    bool namesAwaited = false;       // a member's host name has no first answer yet
    // A listing that lost too many members at once, held since heldSince (none: not held).
    std::optional<Clock::time_point> heldSince;
    std::vector<registry::Endpoint> heldWanted;
    // The most members a listing had within the last --serverset-drop-hold: a loss is measured
    // from it, so that a storm spread over several listings is seen whole.
    std::vector<registry::Endpoint> peak;  // held: the set the workers keep
    Clock::time_point peakAt{};
    // --aperture (a serverset route): the window's size now, 0: off; and where it was last put.
    std::size_t apertureSize = 0;
    std::size_t apertureRing = 0;  // the members it was chosen from
    double apertureCoordinate = 0;
    // Where the coordinate came from: "position" (its own member's, among the route's), "peers"
    // (its position among its own serverset's members), "hash" (of its host:port).
    const char* apertureFrom = "hash";
  };
  // Finagle's aperture load band: outstanding requests per member of the window (all workers),
  // above which the window grows by one member a second, below which it shrinks to its least.
  static constexpr double kApertureHighLoad = 2.0;
  static constexpr double kApertureLowLoad = 0.5;
  // One serverset's resolver and the routes that read it; goes with its last route.
  struct Source {
    std::string key;
    std::unique_ptr<registry::ServersetResolver> resolver;
    std::vector<Runtime*> routes;
  };
  enum class Expiry { negative, idle, evicted };
  // The route's source, made (and started) if no other route names its serverset yet.
  void attach(Runtime& r);
  void detach(Runtime& r);
  Runtime& make(RouteConfig config, bool prefix);
  std::size_t freeSlot();
  void remove(Runtime& r, Expiry why);
  Runtime* leastRecentlyUsed();
  void scheduleSweep();
  void resolved(Runtime& r, const registry::ServersetSnapshot& snapshot);
  // Whether a listing of next (the announced members) is held as a sudden loss; counts and logs
  // the hold's start.
  bool holdsDrop(Runtime& r, const std::vector<registry::Endpoint>& next, Clock::time_point now);
  void useListing(Runtime& r, std::vector<registry::Endpoint> wanted);
  void setStale(Runtime& r, bool stale);
  // The route's next address from its wanted members and the names' addresses; unresolved: those
  // left out.
  Addr nextAddr(Runtime& r, std::size_t& unresolved);
  // --aperture: the window of members (in ring order) this sidecar balances over.
  void narrow(Runtime& r, std::vector<tcp::endpoint>& members);
  // Grows or shrinks each route's window by its load in the workers' last reports.
  void sizeApertures();
  // Its own serverset listed: where it stands among its peers.
  void peersListed(const registry::ServersetSnapshot& s);
  void setGauges(const Runtime& r);
  // Publishes the route's members as they are now; unless listing (a new listing came), only when
  // they changed.
  void publishMembers(Runtime& r, bool listing);
  void wantNames(const Runtime& r);
  void lookUpDue();
  void scheduleLookups();
  void lookedUp(const std::string& name, LookupResult result);
  std::size_t ejectedNow(const std::string& route);
  // /admin/clients' parts of one route.
  boost::json::array namesJson(const Runtime& r) const;
  boost::json::array membersJson(const Runtime& r) const;

  boost::asio::io_context& control_;
  const OutboundConfig& config_;
  Duration zkSessionTimeout_;
  OutboundMetrics& metrics_;
  Publish publish_;
  Retract retract_;
  boost::asio::steady_timer sweep_{control_};
  // One ZooKeeper session per ensemble for all routes' resolvers; outlives them (declared first).
  registry::SharedZkSessions sessions_;
  std::vector<std::unique_ptr<Runtime>> routes_;  // by slot; null: free (an expired route's)
  std::map<std::string, std::size_t> byName_;
  // The serversets' resolvers by (ensembles, path, endpoint); they go before the routes they call.
  std::map<std::string, std::unique_ptr<Source>> sources_;
  std::size_t prefixRoutes_ = 0;
  // This sidecar on the aperture's ring: its member's address, when it is one, and the hashed
  // coordinate of its host:port otherwise.
  std::optional<tcp::endpoint> self_;
  double selfCoordinate_ = 0;
  // Its own serverset (--announce) with --aperture: its position among those members (the other
  // callers of the same routes, as a rule); peerCount_ 0 while it is not among them.
  std::unique_ptr<registry::ServersetResolver> peers_;
  std::size_t peerIndex_ = 0;
  std::size_t peerCount_ = 0;

  std::mutex reportsMutex_;  // workers report once a second; never on the request path
  struct Report {
    std::vector<MemberView> views;
    std::uint64_t ejections = 0;
  };
  std::map<std::string, std::map<unsigned, Report>> reports_;
  std::map<std::string, Clock::time_point> usedAt_;  // by route, from the reports

  // Members' host names: their addresses, and lookups on threads of their own whose answers come
  // back to the control thread. A tick once a second while any name is in use.
  NameCache names_{config_.dnsRefresh};
  boost::asio::steady_timer namesTick_{control_};
  bool namesTicking_ = false;
  NameLookups lookups_{control_, [this](const std::string& name, LookupResult result) {
                         lookedUp(name, std::move(result));
                       }};
};

}  // namespace sidecar
