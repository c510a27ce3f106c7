#pragma once
// Members announced with a host name, not an address (a Finagle server bound to the wildcard
// announces its hostname, Aurora the agent's): the control thread keeps each name's addresses in
// a NameCache and has NameLookups ask DNS on threads of their own, so that neither the control
// thread nor a worker ever waits on a lookup. A name is looked up again every --dns-refresh; a
// lookup that fails keeps the last good addresses.

#include <registry/serverset.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/config.h"

namespace sidecar {

// Each name's last answer and when to ask again. Pure bookkeeping: the clock is passed in.
class NameCache {
 public:
  using Clock = std::chrono::steady_clock;
  using Address = boost::asio::ip::address;
  // A failed lookup is tried again this soon (or after the refresh, when that is shorter).
  static constexpr Duration kRetry{5'000};

  struct Entry {
    std::vector<Address> addresses;  // the last good answer, sorted; kept while lookups fail
    bool answered = false;           // a lookup came back, good or not
    bool pending = false;            // a lookup is under way
    bool failing = false;            // the last lookup failed
    std::string error;               // why it failed
    Clock::time_point due{};         // when to look up again
    Clock::time_point goodAt{};      // the last good answer
  };

  explicit NameCache(Duration refresh) : refresh_(refresh) {}

  // Name is in use: a new one is due at once.
  void want(const std::string& name, Clock::time_point now);
  // The names due for a lookup (none under way), now marked pending.
  std::vector<std::string> due(Clock::time_point now);
  // A lookup's answer: its addresses, or why there are none (empty addresses and no error count
  // as a failure too). True when the addresses a member set takes from the name changed, its
  // first answer included.
  bool answered(const std::string& name, std::vector<Address> addresses, std::string error,
                Clock::time_point now);
  // Forgets every name not in keep (no route uses it any more).
  void retain(const std::set<std::string>& keep);
  const Entry* find(const std::string& name) const;
  bool empty() const { return entries_.empty(); }
  Duration refresh() const { return refresh_; }

 private:
  Duration refresh_;
  std::map<std::string, Entry> entries_;
};

// A route's members as announced (each host an address or a name) made into addresses: a name
// gives one member per address it has, an address a member once whichever members name it.
struct ExpandedMembers {
  std::vector<boost::asio::ip::tcp::endpoint> members;  // in the order announced
  std::map<std::string, std::string> hostOf;  // a member's "address:port" -> the name it came from
  std::size_t unresolved = 0;  // announced members whose name has no address: left out
  bool awaited = false;        // one of those names has not had its first answer yet
};
ExpandedMembers expandMembers(const std::vector<registry::Endpoint>& announced,
                              const NameCache& names);
// Whether host is a name to look up (not an IPv4 or IPv6 address).
bool isHostName(const std::string& host);

// getaddrinfo for a name, any family, stream sockets, as configured addresses allow
// (AI_ADDRCONFIG): the distinct addresses, sorted, or why there are none.
struct LookupResult {
  std::vector<NameCache::Address> addresses;
  std::string error;
};
LookupResult lookupName(const std::string& name);

// Runs lookups on threads of their own (started on first use, at most kThreads) and hands each
// answer to done on the control thread. After the destructor no answer is handed over; a lookup
// still under way then finishes on its thread and is dropped.
class NameLookups {
 public:
  static constexpr unsigned kThreads = 2;
  using Done = std::function<void(const std::string& name, LookupResult result)>;
  using Lookup = std::function<LookupResult(const std::string& name)>;

  NameLookups(boost::asio::io_context& control, Done done, Lookup lookup = lookupName);
  ~NameLookups();
  NameLookups(const NameLookups&) = delete;
  NameLookups& operator=(const NameLookups&) = delete;

  // Queues a lookup of name (any thread).
  void lookup(std::string name);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace sidecar
