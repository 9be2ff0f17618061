#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "gateway/sim/simulator.h"

namespace httplib {
class Server;
}

namespace arbiter::sim {

// The simulator behind a real OpenAI-compatible HTTP server:
// POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models and
// GET /health. Each answer is sent after the simulated generation time, with
// OpenAI's "usage" field. Embeddings come from the built-in hashed n-gram
// embedder (`embedding_dim` wide unless the request asks for "dimensions"),
// so a gateway can be tried against an embedding server without a model.
class SimServer final {
 public:
  // host may be "127.0.0.1"; port 0 lets the OS choose (see port()).
  static absl::StatusOr<std::unique_ptr<SimServer>> Start(
      std::shared_ptr<const Simulator> simulator, const std::string& host,
      int port, int embedding_dim = 384);
  ~SimServer();

  SimServer(const SimServer&) = delete;
  SimServer& operator=(const SimServer&) = delete;

  [[nodiscard]] int port() const { return port_; }
  void Stop();
  void Wait();

 private:
  SimServer() = default;

  std::shared_ptr<const Simulator> simulator_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace arbiter::sim
