#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace arbiter::testing {

// An OpenAI-compatible backend on a loopback port that answers every chat
// completion with `content` after `delay`, for tests of what the gateway
// does while a backend is busy.
class SlowBackend final {
 public:
  SlowBackend(std::chrono::milliseconds delay, std::string content) {
    server_.Post("/v1/chat/completions", [delay, content = std::move(content)](
                                             const httplib::Request&,
                                             httplib::Response& response) {
      std::this_thread::sleep_for(delay);
      response.set_content(
          R"({"choices":[{"message":{"role":"assistant","content":")" +
              content +
              R"("},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}})",
          "application/json");
    });
    server_.set_keep_alive_timeout(1);
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ~SlowBackend() {
    server_.stop();
    thread_.join();
  }

  SlowBackend(const SlowBackend&) = delete;
  SlowBackend& operator=(const SlowBackend&) = delete;

  [[nodiscard]] int port() const { return port_; }
  // The client port of the last request: the same one twice in a row means
  // the gateway kept its connection.
  [[nodiscard]] int last_client_port() const { return last_client_port_; }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> last_client_port_{0};
};

}  // namespace arbiter::testing
