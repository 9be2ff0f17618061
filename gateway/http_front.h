#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/gateway_host.h"
#include "gateway/http/http_server.h"
#include "gateway/readiness.h"
#include "gateway/tls/tls_identity.h"

namespace arbiter {

// The OpenAI-compatible HTTP front, a thin adapter over the gateway's
// components on arbiter's Beast server:
//   POST /v1/chat/completions  the request pipeline, unary or streamed (SSE)
//   GET  /v1/models            the routes and arbiter/auto
//   POST /v1/embeddings        the corpus's embedder (or embedding server)
//   POST /v1/feedback          arbiter's feedback on an answer
//   GET  /healthz              alive
//   GET  /readyz               config loaded and a route's backend reachable
// The schema and errors are gateway/openai's. A client that goes away
// cancels its request and the backend call. The /v1 endpoints need the
// Authorization header the generation's authenticator accepts (gateway/auth)
// when the config has auth; /healthz and /readyz never do.
class HttpFront final {
 public:
  // Listens on server.http_listen ("off" is the caller's to skip) with
  // server.http_io_threads and http_max_connections; bodies up to
  // server.max_request_bytes.
  // /readyz reports `readiness`, which must outlive the front. HTTPS with
  // `tls`.
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(
      GatewayHost& host, const Readiness& readiness,
      std::optional<TlsIdentity> tls = std::nullopt);
  // Closes every connection, cancelling what is in flight.
  ~HttpFront();

  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  [[nodiscard]] int port() const { return server_->port(); }
  // New connections use `tls` (see HttpServer::SetTls).
  absl::Status SetTls(const TlsIdentity& tls) { return server_->SetTls(tls); }
  // From now on /readyz and new chat completions answer 503 (load
  // balancers stop sending); those in flight go on.
  void Drain() { draining_ = true; }
  // Waits until no chat completion is in flight or `deadline` passes;
  // false if some still are.
  bool WaitIdle(absl::Time deadline) const;

  class Handlers;

 private:
  HttpFront(GatewayHost& host, const Readiness& readiness);

  GatewayHost& host_;
  const Readiness& readiness_;
  std::atomic<bool> draining_{false};
  // Chat completions not answered yet; shared with them, which may outlive
  // the front.
  std::shared_ptr<std::atomic<int>> in_flight_ =
      std::make_shared<std::atomic<int>>(0);
  std::unique_ptr<Handlers> handlers_;
  std::unique_ptr<http::HttpServer> server_;  // Last: stops first.
};

}  // namespace arbiter
