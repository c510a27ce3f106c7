// The access log's sink and the escaping of caller-controlled values in log lines.
#include "http/access_log.h"

#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace sidecar {

std::shared_ptr<spdlog::logger> makeAccessLog(const std::string& where) {
  spdlog::init_thread_pool(16384, 1);
  spdlog::sink_ptr sink;
  if (where == "-") {
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  } else {
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(where);
  }
  auto logger = std::make_shared<spdlog::async_logger>(
      "access", sink, spdlog::thread_pool(), spdlog::async_overflow_policy::overrun_oldest);
  logger->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%f%z %v");
  logger->flush_on(spdlog::level::info);
  return logger;
}

std::string escapeForLog(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string identityLogField(std::string_view identity) {
  return identity.empty() ? "-" : "\"" + escapeForLog(identity) + "\"";
}

}  // namespace sidecar
