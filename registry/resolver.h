#pragma once
// Reads a serverset and keeps it current with watches: what Finagle's zk2! resolver does, for
// `sidecar resolve` and the outbound mesh. One resolver per serverset, used on the thread of its
// io_context (the control thread's), where every callback runs; what it publishes is an immutable
// snapshot that other threads may share.

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "detail/one_shot_timer.h"
#include "serverset.h"
#include "zk_session.h"

namespace registry {

// One usable member: ALIVE, in the wanted shard, with the wanted endpoint.
struct ResolvedMember {
  std::string name;  // member_0000000007
  Endpoint endpoint;
  std::optional<int32_t> shard;
  bool operator==(const ResolvedMember&) const = default;
};

// With several ensembles (zk2!a:2181#b:2181!/path) the union of theirs: a member is named
// member_NNNNNNNNNN@<ensemble>, and one whose host:port an earlier ensemble has already given is
// left out.
struct ServersetSnapshot {
  std::map<std::string, ResolvedMember> members;  // by node name
  std::map<std::string, std::string> malformed;   // node name -> why it was skipped
  // Ensembles not listed once yet: the set holds the others' members. A reader that wants the
  // whole set waits for 0; the data path takes what there is.
  std::size_t unlisted = 0;
};

struct ResolverOptions {
  std::chrono::milliseconds sessionTimeout{10'000};
  // Before listing again after a read failed, and before replacing an expired session.
  std::chrono::milliseconds retryDelay{1'000};
  // At most one listing per window: a change that comes within it of the last listing is listed
  // at its end, with whatever else changed meanwhile (a burst of changes costs one list of N names
  // per window, not one per change). A change after a quiet window is listed at once, so this is
  // also the most a change waits for it. 0: list on every change.
  std::chrono::milliseconds coalesceWindow{100};
  ZkSessionFactory connect{};  // empty: the ZooKeeper C client on the resolver's io_context
};

class ServersetResolver {
 public:
  // Called with each complete listing of an ensemble, with the union of every ensemble's last
  // complete listing; a listing with a member that could not be read is never published, the last
  // complete one stays.
  using OnUpdate = std::function<void(const ServersetSnapshot&)>;
  // Called when stale() changes.
  using OnStale = std::function<void(bool stale)>;

  ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                    std::chrono::milliseconds sessionTimeout, OnUpdate onUpdate);
  ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address, ResolverOptions options,
                    OnUpdate onUpdate, OnStale onStale = {});
  // Closes the sessions; no callback runs afterwards. Published snapshots stay valid.
  ~ServersetResolver();
  ServersetResolver(const ServersetResolver&) = delete;
  ServersetResolver& operator=(const ServersetResolver&) = delete;

  void start();

  // The last complete listing; null until there is one.
  std::shared_ptr<const ServersetSnapshot> snapshot() const { return snapshot_; }
  // The snapshot may be out of date: there is none yet, a session is disconnected or expired,
  // or the last listing of an ensemble could not be read whole. It keeps serving; the caller
  // says it is stale.
  bool stale() const { return stale_; }
  // Why no ZooKeeper server could be reached lately (ZkSession::unreachableReason), or empty;
  // with several ensembles, "<ensemble>: <why>" for each that has a reason, joined by "; ".
  std::string unreachableReason() const;
  // The ensembles not listed once yet, joined by '#' (empty: none).
  std::string unlisted() const;

 private:
  // A listed member: read once (members are immutable once written), never again while listed.
  struct Cached {
    std::optional<ResolvedMember> member;  // none: not ALIVE, other shard, or no such endpoint
    std::string malformed;
    bool read = false;     // its data came (or it was gone by then)
    bool reading = false;  // its read is under way
  };
  // One ensemble: its own session (shared with other readers of it, by options.connect), watch,
  // members and staleness.
  struct Ensemble {
    Ensemble(boost::asio::io_context& ioc, std::string connect)
        : connect(std::move(connect)), reopenTimer(ioc), refreshTimer(ioc), coalesceTimer(ioc) {}
    std::string connect;
    // The timers go first (nothing they would run can run), then the session, whose
    // completions are dropped once it is gone.
    std::unique_ptr<ZkSession> session;
    detail::OneShotTimer reopenTimer;     // replaces an expired session
    detail::OneShotTimer refreshTimer;    // lists again after a read failed
    detail::OneShotTimer coalesceTimer;   // lists at the end of the coalescing window
    std::map<std::string, Cached> cache;  // the last listing's members
    uint64_t generation = 0;              // a newer listing makes an older one's answer moot
    std::size_t reading = 0;              // member reads under way
    ZkError readError = ZkError::Ok;      // the last read that failed since the last listing
    ZkStat listing;                       // the stat of the last listing (cversion, pzxid)
    ZkStat published;                     // the stat of the last listing published whole
    std::chrono::steady_clock::time_point listedAt{};  // when the last listing was asked for
    bool listed = false;                               // a complete listing was published
    bool stale = true;
  };
  void openSession(Ensemble& e);
  void onEvent(Ensemble& e, ZkEvent event, ZkState state);
  void changed(Ensemble& e);  // a watch fired: list now, or at the end of the window
  void refresh(Ensemble& e);
  void listed(Ensemble& e, std::vector<std::string> names, ZkStat stat);
  void read(Ensemble& e, const std::string& name);
  void readDone(Ensemble& e);
  void readFailed(Ensemble& e, const char* what, ZkError error, std::size_t unread);
  void publish(Ensemble& e);
  void setStale(Ensemble& e, bool stale, std::string_view reason);
  std::string where(const Ensemble& e) const;  // the path, and the ensemble when there are several

  ServersetAddress address_;
  ResolverOptions options_;
  OnUpdate onUpdate_;
  OnStale onStale_;
  std::vector<std::unique_ptr<Ensemble>> ensembles_;
  std::shared_ptr<const ServersetSnapshot> snapshot_;
  bool stale_ = true;
};

// Picks what a reader uses from one decoded member; nullopt when it does not qualify.
std::optional<ResolvedMember> selectMember(const std::string& name, const ServiceInstance& instance,
                                           const ServersetAddress& address);

}  // namespace registry
