// The ping/help service's routes.
#include "app/pinghelp.h"

namespace sidecar {

PlainResponse handlePinghelpRequest(const PlainRequest& req, const HelpCatalog& catalog) {
  std::string_view path = req.target();
  path = path.substr(0, path.find('?'));
  const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
  auto onlyGet = [&] {
    auto res = textResponse(req, http::status::method_not_allowed, "method not allowed\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  };
  if (path == "/ping") {
    return get ? textResponse(req, http::status::ok, "pong") : onlyGet();
  }
  if (path == "/help") {
    return get ? textResponse(req, http::status::ok, catalog.indexJson, "application/json")
               : onlyGet();
  }
  static constexpr std::string_view kHelpPrefix = "/help/";
  if (path.starts_with(kHelpPrefix)) {
    auto it = catalog.methodJson.find(std::string(path.substr(kHelpPrefix.size())));
    if (it != catalog.methodJson.end()) {
      return get ? textResponse(req, http::status::ok, it->second, "application/json") : onlyGet();
    }
  }
  return textResponse(req, http::status::not_found, "not found\n");
}

}  // namespace sidecar
