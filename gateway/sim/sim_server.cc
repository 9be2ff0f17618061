#include "gateway/sim/sim_server.h"

#include <httplib.h>

#include <exception>
#include <optional>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "nlohmann/json.hpp"
#include "retrieval/embedder.h"
#include "retrieval/tokenizer.h"

namespace arbiter::sim {
namespace {

using ::arbiter::json::Dump;
using ::arbiter::json::View;
using nlohmann::json;

// Simulated generation sleeps, so the pool bounds concurrent answers.
constexpr size_t kWorkerThreads = 256;
// Larger request bodies get 413 before they are read into memory.
constexpr size_t kMaxRequestBytes = 8 << 20;
constexpr int64_t kMaxTokensLimit = 1'000'000;
constexpr int64_t kMaxDimensions = 8192;

void SendError(httplib::Response& response, int status, absl::string_view type,
               absl::string_view message) {
  response.status = status;
  response.set_content(
      Dump(json{{"error", {{"type", type}, {"message", message}}}}),
      "application/json");
}

void BadRequest(httplib::Response& response, absl::string_view message) {
  SendError(response, 400, "invalid_request_error", message);
}

// The request's JSON object, or a 400 already sent.
std::optional<json> ParseBody(const httplib::Request& request,
                              httplib::Response& response) {
  auto body = arbiter::json::Parse(request.body);
  if (!body.ok()) {
    BadRequest(response,
               absl::StrCat("body: not JSON: ", body.status().message()));
    return std::nullopt;
  }
  if (!body->is_object()) {
    BadRequest(response, absl::StrCat("body: expected an object, got ",
                                      arbiter::json::TypeName(*body)));
    return std::nullopt;
  }
  return *std::move(body);
}

void HandleChat(const Simulator& simulator, const httplib::Request& request,
                httplib::Response& response) {
  std::optional<json> body = ParseBody(request, response);
  if (!body.has_value()) return;
  const View root(*body);
  auto stream = root["stream"].OptionalBool();
  if (!stream.ok()) return BadRequest(response, stream.status().message());
  if (stream->value_or(false)) {
    return BadRequest(response,
                      "stream: this simulator answers without streaming");
  }
  auto model = root["model"].String();
  if (!model.ok()) return BadRequest(response, model.status().message());
  const View messages_json = root["messages"];
  if (!messages_json.is_array() || messages_json.size() == 0) {
    return BadRequest(response, "messages: must be a non-empty array");
  }
  std::vector<SimMessage> messages;
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < messages_json.size(); ++i) {
    auto role = messages_json[i]["role"].String();
    if (!role.ok()) return BadRequest(response, role.status().message());
    auto content = messages_json[i]["content"].String();
    if (!content.ok()) return BadRequest(response, content.status().message());
    messages.push_back({*std::move(role), *std::move(content)});
    prompt_tokens += retrieval::CountTokens(messages.back().content) + 4;
  }
  auto max_tokens = root["max_tokens"].OptionalInt();
  if (!max_tokens.ok()) {
    return BadRequest(response, max_tokens.status().message());
  }
  if (max_tokens->value_or(0) < 0 ||
      max_tokens->value_or(0) > kMaxTokensLimit) {
    return BadRequest(response, absl::StrCat("max_tokens: must be in [0, ",
                                             kMaxTokensLimit, "]"));
  }
  SimAnswer answer = simulator.Answer(
      *model, messages, static_cast<int>(max_tokens->value_or(0)));
  absl::SleepFor(answer.delay);
  thread_local absl::BitGen gen;
  json reply = {
      {"id", absl::StrCat("chatcmpl-sim-", absl::Uniform<uint64_t>(gen))},
      {"object", "chat.completion"},
      {"created", absl::ToUnixSeconds(absl::Now())},
      {"model", *model},
      {"choices",
       json::array(
           {{{"index", 0},
             {"message", {{"role", "assistant"}, {"content", answer.text}}},
             {"finish_reason", "stop"}}})},
      {"usage",
       {{"prompt_tokens", prompt_tokens},
        {"completion_tokens", answer.output_tokens},
        {"total_tokens", prompt_tokens + answer.output_tokens}}}};
  response.set_content(Dump(reply), "application/json");
}

void HandleEmbeddings(int default_dim, const httplib::Request& request,
                      httplib::Response& response) {
  std::optional<json> body = ParseBody(request, response);
  if (!body.has_value()) return;
  const View root(*body);
  std::vector<std::string> inputs;
  const View input = root["input"];
  if (auto text = input.String(); text.ok()) {
    inputs.push_back(*std::move(text));
  } else if (input.is_array() && input.size() > 0) {
    for (size_t i = 0; i < input.size(); ++i) {
      auto item = input[i].String();
      if (!item.ok()) return BadRequest(response, item.status().message());
      inputs.push_back(*std::move(item));
    }
  } else {
    return BadRequest(response,
                      "input: a string or a non-empty array of strings");
  }
  auto dimensions = root["dimensions"].OptionalInt();
  if (!dimensions.ok() || dimensions->value_or(default_dim) < 1 ||
      dimensions->value_or(default_dim) > kMaxDimensions) {
    return BadRequest(response, absl::StrCat("dimensions: an integer in [1, ",
                                             kMaxDimensions, "]"));
  }
  auto model = root["model"].OptionalString();
  if (!model.ok()) return BadRequest(response, model.status().message());
  const retrieval::HashedNgramEmbedder embedder(
      static_cast<int>(dimensions->value_or(default_dim)));
  json data = json::array();
  int64_t tokens = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    tokens += static_cast<int64_t>(retrieval::Words(inputs[i]).size());
    data.push_back({{"object", "embedding"},
                    {"index", i},
                    {"embedding", embedder.Embed(inputs[i])}});
  }
  json reply = {
      {"object", "list"},
      {"model", model->value_or("sim-embedding")},
      {"data", std::move(data)},
      {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
  response.set_content(Dump(reply), "application/json");
}

}  // namespace

absl::StatusOr<std::unique_ptr<SimServer>> SimServer::Start(
    std::shared_ptr<const Simulator> simulator, const std::string& host,
    int port, int embedding_dim) {
  auto server = std::unique_ptr<SimServer>(new SimServer());
  server->simulator_ = std::move(simulator);
  server->server_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->server_;
  http.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  // Small responses go out at once instead of waiting on Nagle.
  http.set_tcp_nodelay(true);
  http.set_payload_max_length(kMaxRequestBytes);
  // The last line of defence: a handler's exception is this request's 500.
  http.set_exception_handler([](const httplib::Request&,
                                httplib::Response& response,
                                std::exception_ptr error) {
    std::string what = "unknown exception";
    try {
      if (error) std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    SendError(response, 500, "internal_error", what);
  });
  const Simulator* sim = server->simulator_.get();
  http.Post("/v1/chat/completions", [sim](const httplib::Request& request,
                                          httplib::Response& response) {
    HandleChat(*sim, request, response);
  });
  http.Post("/v1/embeddings", [embedding_dim](const httplib::Request& request,
                                              httplib::Response& response) {
    HandleEmbeddings(embedding_dim, request, response);
  });
  http.Get("/v1/models", [sim](const httplib::Request&,
                               httplib::Response& response) {
    json models = json::array();
    for (const v1::SimModel& model : sim->config().models()) {
      models.push_back({{"id", model.name()},
                        {"object", "model"},
                        {"owned_by", "arbiter-sim"}});
    }
    response.set_content(Dump(json{{"object", "list"}, {"data", models}}),
                         "application/json");
  });
  http.Get("/health", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  server->port_ = port == 0 ? http.bind_to_any_port(host)
                            : (http.bind_to_port(host, port) ? port : -1);
  if (server->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("sim-server: cannot listen on ", host, ":", port));
  }
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  // httplib's stop() does nothing until the loop runs: a Stop() that came
  // first would leave the thread in accept() for ever.
  while (!http.is_running()) absl::SleepFor(absl::Milliseconds(1));
  return server;
}

SimServer::~SimServer() {
  Stop();
  Wait();
}

void SimServer::Stop() {
  if (server_ != nullptr) server_->stop();
}

void SimServer::Wait() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace arbiter::sim
