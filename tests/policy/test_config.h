#pragma once

#include <string>

#include "arbiter/v1/config.pb.h"
#include "google/protobuf/text_format.h"

namespace arbiter::testing {

// Three routes (expensive, mid, cheap) over one backend and two tasks; the
// policy is set by each test.
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
        routes { name: "expensive" kind: "prompted" backend: "sim" model: "m" }
        routes { name: "mid" kind: "fine_tuned" backend: "sim" model: "m" }
        routes { name: "cheap" kind: "fine_tuned" backend: "sim" model: "m" }
      )pb",
      &config);
  if (!policy_text.empty()) {
    google::protobuf::TextFormat::MergeFromString(policy_text, &config);
  }
  return config;
}

}  // namespace arbiter::testing
