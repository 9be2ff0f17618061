#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/sim/simulator.h"

namespace arbiter::sim {

// The simulator behind a real OpenAI-compatible HTTP server:
// POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models and
// GET /health. Each answer is sent after the simulated generation time, with
// OpenAI's "usage" field; with "stream": true it comes as Server-Sent Events
// framed as OpenAI frames them (chat.completion.chunk objects, the role in
// the first delta, finish_reason in the last content chunk, a usage chunk
// with no choices when stream_options.include_usage, then data: [DONE]),
// paced as the simulator paces a stream. A request's "seed" takes part in
// the simulator's choice. Embeddings come from the built-in hashed n-gram
// embedder (`embedding_dim` wide unless the request asks for "dimensions"),
// so a gateway can be tried against an embedding server without a model.
//
// Event-driven (Boost.Beast over Asio, two I/O threads): a waiting answer or
// an open stream costs a timer and a connection's buffers, never a thread,
// so tens of thousands of concurrent streams fit.
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
  // Stops serving: Wait returns. Thread-safe.
  void Stop();
  // Blocks until Stop.
  void Wait();

  struct State;

 private:
  SimServer() = default;

  std::shared_ptr<State> state_;
  int port_ = 0;
};

}  // namespace arbiter::sim
