#pragma once

#include <string>

#include "arbiter/v1/config.pb.h"
#include "gateway/config.h"
#include "google/protobuf/text_format.h"

namespace arbiter::testing {

// Three routes (expensive, mid, cheap) over one backend and two tasks; the
// policy is set by each test. Defaults are applied as a loaded config has
// them.
inline v1::Config ThreeRouteConfig(const std::string& policy_text = "") {
  v1::Config config;
  google::protobuf::TextFormat::ParseFromString(
      R"pb(
        tasks: "a"
        tasks: "b"
        backends {
          name: "sim"
          sim { dataset: "q.jsonl" }
        }
        routes {
          name: "expensive"
          kind: ROUTE_KIND_PROMPTED
          backend: "sim"
          model: "m"
        }
        routes {
          name: "mid"
          kind: ROUTE_KIND_FINE_TUNED
          backend: "sim"
          model: "m"
        }
        routes {
          name: "cheap"
          kind: ROUTE_KIND_FINE_TUNED
          backend: "sim"
          model: "m"
        }
      )pb",
      &config);
  if (!policy_text.empty()) {
    google::protobuf::TextFormat::MergeFromString(policy_text, &config);
  }
  ApplyConfigDefaults(config);
  return config;
}

}  // namespace arbiter::testing
