#include "gateway/sim/sim_server.h"

#include <httplib.h>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "retrieval/embedder.h"
#include "retrieval/tokenizer.h"

namespace arbiter::sim {
namespace {

using nlohmann::json;

// Simulated generation sleeps, so the pool bounds concurrent answers.
constexpr size_t kWorkerThreads = 256;

void SendError(httplib::Response& response, int status, absl::string_view type,
               absl::string_view message) {
  response.status = status;
  response.set_content(
      json{{"error", {{"type", type}, {"message", message}}}}.dump(),
      "application/json");
}

void HandleChat(const Simulator& simulator, const httplib::Request& request,
                httplib::Response& response) {
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    SendError(response, 400, "invalid_request_error", "body: not JSON");
    return;
  }
  if (body.value("stream", false)) {
    SendError(response, 400, "invalid_request_error",
              "stream: this simulator answers without streaming");
    return;
  }
  auto model = body.find("model");
  if (model == body.end() || !model->is_string()) {
    SendError(response, 400, "invalid_request_error",
              "model: must be a string");
    return;
  }
  auto messages_json = body.find("messages");
  if (messages_json == body.end() || !messages_json->is_array() ||
      messages_json->empty()) {
    SendError(response, 400, "invalid_request_error",
              "messages: must be a non-empty array");
    return;
  }
  std::vector<SimMessage> messages;
  int64_t prompt_tokens = 0;
  for (const json& message : *messages_json) {
    if (!message.is_object() || !message.contains("role") ||
        !message["role"].is_string() || !message.contains("content") ||
        !message["content"].is_string()) {
      SendError(response, 400, "invalid_request_error",
                "messages: each needs string role and content");
      return;
    }
    messages.push_back({message["role"].get<std::string>(),
                        message["content"].get<std::string>()});
    prompt_tokens += retrieval::CountTokens(messages.back().content) + 4;
  }
  int max_tokens = body.value("max_tokens", 0);
  SimAnswer answer =
      simulator.Answer(model->get<std::string>(), messages, max_tokens);
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
  response.set_content(reply.dump(), "application/json");
}

void HandleEmbeddings(int default_dim, const httplib::Request& request,
                      httplib::Response& response) {
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    return SendError(response, 400, "invalid_request_error",
                     "body: not a JSON object");
  }
  std::vector<std::string> inputs;
  const json& input = body.value("input", json());
  if (input.is_string()) {
    inputs.push_back(input.get<std::string>());
  } else if (input.is_array() && !input.empty()) {
    for (const json& item : input) {
      if (!item.is_string()) {
        return SendError(response, 400, "invalid_request_error",
                         "input: every item must be a string");
      }
      inputs.push_back(item.get<std::string>());
    }
  } else {
    return SendError(response, 400, "invalid_request_error",
                     "input: a string or a non-empty array of strings");
  }
  const json& dimensions = body.value("dimensions", json(default_dim));
  if (!dimensions.is_number_integer() || dimensions.get<int>() < 1 ||
      dimensions.get<int>() > 8192) {
    return SendError(response, 400, "invalid_request_error",
                     "dimensions: an integer in [1, 8192]");
  }
  const retrieval::HashedNgramEmbedder embedder(dimensions.get<int>());
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
      {"model", body.value("model", "sim-embedding")},
      {"data", std::move(data)},
      {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
  response.set_content(reply.dump(), "application/json");
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
    response.set_content(json{{"object", "list"}, {"data", models}}.dump(),
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
