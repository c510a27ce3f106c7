// Watches the certificate files by inode, modification time and size.
#include "control/tls_reloader.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <ctime>

namespace sidecar {

namespace {

// "2031-05-04T12:00:00Z": what a person compares with a date (the metric keeps epoch seconds).
std::string isoUtc(long epochSeconds) {
  const std::time_t t = epochSeconds;
  std::tm tm{};
  char text[32] = "unknown";
  if (epochSeconds > 0 && gmtime_r(&t, &tm)) {
    std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  return text;
}

}  // namespace

TlsReloader::TlsReloader(boost::asio::io_context& ioc, TlsFiles files, Duration interval,
                         ControlMetrics& m, std::function<void(const TlsContext&)> apply)
    : files_(std::move(files)), interval_(interval), m_(m), apply_(std::move(apply)), timer_(ioc) {}

std::variant<TlsContext, std::string> TlsReloader::initial() {
  auto tls = makeServerTlsContext(files_);
  if (auto* ctx = std::get_if<TlsContext>(&tls)) {
    m_.certNotAfter->Set(static_cast<double>(ctx->certNotAfter));
  }
  stamps_ = currentStamps();
  return tls;
}

TlsReloader::FileStamp TlsReloader::stampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return {};
  }
  return {st.st_ino, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec, st.st_size};
}

std::array<TlsReloader::FileStamp, 3> TlsReloader::currentStamps() const {
  return {stampOf(files_.cert), stampOf(files_.key), stampOf(files_.clientCa)};
}

void TlsReloader::schedule() {
  timer_.expires_after(interval_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) {
      return;
    }
    if (currentStamps() != stamps_) {
      reload("file_changed");
    }
    schedule();
  });
}

void TlsReloader::reload(const char* reason) {
  stamps_ = currentStamps();
  auto tls = makeServerTlsContext(files_);
  if (auto* error = std::get_if<std::string>(&tls)) {
    m_.certReloadFailed->Increment();
    spdlog::error("event=tls_reload_failed trigger={} error=\"{}\" action=kept_previous", reason,
                  *error);
    return;
  }
  auto& ctx = std::get<TlsContext>(tls);
  apply_(ctx);
  m_.certReloadOk->Increment();
  m_.certNotAfter->Set(static_cast<double>(ctx.certNotAfter));
  spdlog::info("event=tls_reloaded trigger={} not_after={}", reason, isoUtc(ctx.certNotAfter));
}

}  // namespace sidecar
