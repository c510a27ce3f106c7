// Host names of members: the cache of their addresses, and the threads that look them up.
#include "outbound/names.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/address_v6.hpp>
#include <boost/asio/post.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "net/io.h"
#include "upstream/addr.h"

namespace sidecar {

void NameCache::want(const std::string& name, Clock::time_point now) {
  auto [it, added] = entries_.try_emplace(name);
  if (added) {
    it->second.due = now;
  }
}

std::vector<std::string> NameCache::due(Clock::time_point now) {
  std::vector<std::string> out;
  for (auto& [name, e] : entries_) {
    if (!e.pending && e.due <= now) {
      e.pending = true;
      out.push_back(name);
    }
  }
  return out;
}

bool NameCache::answered(const std::string& name, std::vector<Address> addresses, std::string error,
                         Clock::time_point now) {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return false;  // no route uses it any more
  }
  auto& e = it->second;
  const bool first = !e.answered;
  e.answered = true;
  e.pending = false;
  std::sort(addresses.begin(), addresses.end());
  addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
  if (!error.empty() || addresses.empty()) {
    e.failing = true;
    e.error = error.empty() ? "no address" : std::move(error);
    e.due = now + std::min(kRetry, refresh_);
    return first;  // the last good addresses stay
  }
  e.failing = false;
  e.error.clear();
  e.due = now + refresh_;
  e.goodAt = now;
  const bool changed = addresses != e.addresses;
  e.addresses = std::move(addresses);
  return first || changed;
}

void NameCache::retain(const std::set<std::string>& keep) {
  std::erase_if(entries_, [&](const auto& kv) { return !keep.contains(kv.first); });
}

const NameCache::Entry* NameCache::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

bool isHostName(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  return static_cast<bool>(ec);
}

ExpandedMembers expandMembers(const std::vector<registry::Endpoint>& announced,
                              const NameCache& names) {
  ExpandedMembers out;
  out.members.reserve(announced.size());
  // Hashed: a set of thousands is looked through once per listing.
  std::unordered_set<boost::asio::ip::tcp::endpoint, EndpointHash> seen;
  seen.reserve(announced.size());
  const auto add = [&](const boost::asio::ip::tcp::endpoint& e, const std::string* host) {
    if (seen.insert(e).second) {
      out.members.push_back(e);
      if (host) {
        out.hostOf[endpointText(e)] = *host;
      }
    }
  };
  for (const auto& a : announced) {
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(a.host, ec);
    if (!ec) {
      add({address, a.port}, nullptr);
      continue;
    }
    // A name: one member per address (IPv4 and IPv6 alike), each balanced, ejected and retried
    // on its own; none until its first lookup answers.
    const auto* e = names.find(a.host);
    if (!e || e->addresses.empty()) {
      ++out.unresolved;
      out.awaited = out.awaited || !e || !e->answered;
      continue;
    }
    for (const auto& address : e->addresses) {
      add({address, a.port}, &a.host);
    }
  }
  return out;
}

LookupResult lookupName(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  LookupResult out;
  const int rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    out.error = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    return out;
  }
  for (auto* ai = list; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      boost::asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sin->sin_addr, b.size());
      out.addresses.emplace_back(boost::asio::ip::address_v4(b));
    } else if (ai->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      boost::asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sin6->sin6_addr, b.size());
      out.addresses.emplace_back(boost::asio::ip::address_v6(b, sin6->sin6_scope_id));
    }
  }
  ::freeaddrinfo(list);
  std::sort(out.addresses.begin(), out.addresses.end());
  out.addresses.erase(std::unique(out.addresses.begin(), out.addresses.end()), out.addresses.end());
  if (out.addresses.empty()) {
    out.error = "no address";
  }
  return out;
}

// Shared with the lookup threads, which are detached: one stuck in getaddrinfo must not hold up
// the sidecar's exit. closed (under the mutex) ends the hand-over of answers.
struct NameLookups::State {
  boost::asio::io_context& control;
  Done done;
  Lookup lookup;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::string> queue;
  unsigned threads = 0;
  unsigned idle = 0;
  bool closed = false;

  State(boost::asio::io_context& c, Done d, Lookup l)
      : control(c), done(std::move(d)), lookup(std::move(l)) {}

  // On the control thread: checked again, as the owner may have gone since the post.
  void handOver(const std::string& name, LookupResult result) {
    {
      std::lock_guard guard(mutex);
      if (closed) {
        return;
      }
    }
    done(name, std::move(result));
  }

  static void run(std::shared_ptr<State> s) {
    std::unique_lock lock(s->mutex);
    for (;;) {
      ++s->idle;
      s->wake.wait(lock, [&] { return s->closed || !s->queue.empty(); });
      --s->idle;
      if (s->closed) {
        return;
      }
      auto name = std::move(s->queue.front());
      s->queue.pop_front();
      lock.unlock();
      auto result = s->lookup(name);
      lock.lock();
      if (s->closed) {
        return;
      }
      boost::asio::post(s->control, [s, name = std::move(name), r = std::move(result)]() mutable {
        s->handOver(name, std::move(r));
      });
    }
  }
};

NameLookups::NameLookups(boost::asio::io_context& control, Done done, Lookup lookup)
    : state_(std::make_shared<State>(control, std::move(done), std::move(lookup))) {}

NameLookups::~NameLookups() {
  std::lock_guard lock(state_->mutex);
  state_->closed = true;
  state_->wake.notify_all();
}

void NameLookups::lookup(std::string name) {
  std::lock_guard lock(state_->mutex);
  state_->queue.push_back(std::move(name));
  if (state_->idle == 0 && state_->threads < kThreads) {
    ++state_->threads;
    std::thread(State::run, state_).detach();
  } else {
    state_->wake.notify_one();
  }
}

}  // namespace sidecar
