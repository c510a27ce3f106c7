// pinghelp's help files: each one method's description, checked and serialized once.
#include "app/help.h"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace sidecar {

namespace fs = std::filesystem;
namespace json = boost::json;

HelpMethod parseHelpMethod(std::string_view text) {
  HelpMethod out;
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) {
    out.error = "not valid JSON (" + ec.message() + ")";
    return out;
  }
  if (!v.is_object()) {
    out.error = "expected a JSON object";
    return out;
  }
  const auto& obj = v.as_object();
  for (const char* key : {"name", "method", "path", "description"}) {
    const auto* field = obj.if_contains(key);
    if (!field || !field->is_string() || field->as_string().empty()) {
      out.error = std::string("\"") + key + "\" must be a non-empty string";
      return out;
    }
  }
  out.name = std::string(obj.at("name").as_string());
  out.json = json::serialize(v);
  return out;
}

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
    auto method = parseHelpMethod(text.str());
    if (!method.error.empty()) {
      return "help file '" + file.string() + "': " + method.error;
    }
    if (catalog.methodJson.count(method.name)) {
      return "help file '" + file.string() + "': method \"" + method.name + "\" is described twice";
    }
    methods.push_back(json::parse(method.json));
    catalog.methodJson[method.name] = method.json + "\n";
  }
  json::value index = {{"service", "pinghelp"}, {"methods", methods}};
  catalog.indexJson = json::serialize(index) + "\n";
  return catalog;
}

}  // namespace sidecar
