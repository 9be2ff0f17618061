#pragma once

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/backends/backend.h"

typedef void CURLM;

namespace arbiter {

// An OpenAI-compatible /v1/chat/completions server (vLLM, TGI, llama.cpp,
// Ollama, OpenAI). Requests run on one event thread of libcurl's multi
// interface, so a thousand slow requests cost a thousand buffers, not a
// thousand threads. Usage comes from the response's "usage" field, or is
// counted locally when the server sends none.
class OpenAIBackend final : public Backend {
 public:
  // api_key may be empty (no Authorization header).
  OpenAIBackend(std::string name, const v1::OpenAIBackend& config,
                std::string api_key);
  ~OpenAIBackend() override;

  OpenAIBackend(const OpenAIBackend&) = delete;
  OpenAIBackend& operator=(const OpenAIBackend&) = delete;

  void Complete(BackendRequest request, BackendCallback done) override;
  void CancelAll(const absl::Status& why) override;
  absl::string_view name() const override { return name_; }

  struct Transfer;

 private:
  void Loop();
  void Finish(Transfer* transfer, int curl_code);

  const std::string name_;
  const std::string url_;
  const std::string api_key_;
  CURLM* const multi_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Transfer>> incoming_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set by CancelAll; the loop fails everything it holds and clears it.
  std::optional<absl::Status> cancel_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace arbiter
