// The ping/help service's routes and its help-file loader.
#include "pinghelp.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sidecar {

namespace fs = std::filesystem;
namespace json = boost::json;

std::variant<HelpCatalog, std::string> loadHelpCatalog(const std::string& dir) {
  std::error_code fec;
  if (!fs::is_directory(dir, fec)) {
    return "--help-dir '" + dir + "': not a readable directory";
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, fec)) {
    if (entry.path().extension() == ".json") {
      files.push_back(entry.path());
    }
  }
  if (fec) {
    return "--help-dir '" + dir + "': " + fec.message();
  }
  if (files.empty()) {
    return "--help-dir '" + dir + "': no *.json help file in it";
  }
  std::sort(files.begin(), files.end());
  HelpCatalog catalog;
  json::array methods;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      return "help file '" + file.string() + "': cannot read it";
    }
    json::error_code ec;
    json::value v = json::parse(text.str(), ec);
    if (ec) {
      return "help file '" + file.string() + "': not valid JSON (" + ec.message() + ")";
    }
    if (!v.is_object()) {
      return "help file '" + file.string() + "': expected a JSON object";
    }
    const auto& obj = v.as_object();
    for (const char* key : {"name", "method", "path", "description"}) {
      const auto* field = obj.if_contains(key);
      if (!field || !field->is_string() || field->as_string().empty()) {
        return "help file '" + file.string() + "': \"" + key + "\" must be a non-empty string";
      }
    }
    std::string name(obj.at("name").as_string());
    if (catalog.methodJson.count(name)) {
      return "help file '" + file.string() + "': method \"" + name + "\" is described twice";
    }
    catalog.methodJson[name] = json::serialize(v) + "\n";
    methods.push_back(v);
  }
  json::value index = {{"service", "pinghelp"}, {"methods", methods}};
  catalog.indexJson = json::serialize(index) + "\n";
  return catalog;
}

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
