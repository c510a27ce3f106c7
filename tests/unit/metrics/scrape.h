#pragma once
// What a sharded family's scrape says, for tests that check a series under its labels.
#include <metrics/sharded.h>
#include <prometheus/text_serializer.h>

#include <string>

namespace metrics::test {

inline std::string scrape(const ShardedCollector& c) {
  return prometheus::TextSerializer().Serialize(c.Collect());
}

inline bool holds(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

}  // namespace metrics::test
