#include "gateway/pipeline/request_pipeline.h"

#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/json.h"
#include "common/quote.h"
#include "gateway/auth/authenticator.h"
#include "gateway/config.h"
#include "retrieval/retriever.h"
#include "retrieval/tokenizer.h"

namespace arbiter {
namespace {

double UniformDraw() {
  thread_local absl::BitGen gen;
  return absl::Uniform<double>(gen, 0.0, 1.0);
}

uint64_t RandomNonce() {
  thread_local absl::BitGen gen;
  return absl::Uniform<uint64_t>(gen);
}

std::string KnownNames(
    const google::protobuf::RepeatedPtrField<v1::Route>& routes) {
  std::vector<std::string> names;
  for (const v1::Route& route : routes) names.push_back(route.name());
  return absl::StrJoin(names, ", ");
}

// The content of the last user message (Validate makes sure there is one):
// what a request asks, after any tool results that follow it.
const std::string& Question(const v1::InferRequest& request) {
  for (int i = request.messages_size() - 1; i > 0; --i) {
    if (request.messages(i).role() == v1::ROLE_USER) {
      return request.messages(i).content();
    }
  }
  return request.messages(0).content();
}

// Tool calls belong to assistant messages and call ids to tool messages.
absl::Status ValidateToolFields(const v1::ChatMessage& message, int index) {
  const std::string path = absl::StrCat("messages[", index, "]");
  if (message.role() == v1::ROLE_TOOL) {
    if (message.tool_call_id().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ".tool_call_id: a tool message must name the call it answers"));
    }
  } else if (!message.tool_call_id().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".tool_call_id: only a tool message has one"));
  }
  if (message.tool_calls_json().empty()) return absl::OkStatus();
  if (message.role() != v1::ROLE_ASSISTANT) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ".tool_calls_json: only an assistant message makes them"));
  }
  auto calls = json::Parse(message.tool_calls_json());
  if (!calls.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ".tool_calls_json: not JSON: ", calls.status().message()));
  }
  if (!calls->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".tool_calls_json: expected an array, got ",
                     json::TypeName(*calls)));
  }
  return absl::OkStatus();
}

Outcome OutcomeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return Outcome::kUnavailable;
    case absl::StatusCode::kDeadlineExceeded:
      return Outcome::kTimeout;
    case absl::StatusCode::kCancelled:
      return Outcome::kCancelled;
    default:
      return Outcome::kError;
  }
}

}  // namespace

void InferHandle::Cancel() {
  std::shared_ptr<CallHandle> backend_call;
  {
    std::lock_guard lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    backend_call = std::move(backend_call_);
  }
  if (backend_call != nullptr) backend_call->Cancel();
}

bool InferHandle::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

void InferHandle::Attach(std::shared_ptr<CallHandle> backend_call) {
  {
    std::lock_guard lock(mu_);
    if (ended_) return;
    if (!cancelled_) {
      backend_call_ = std::move(backend_call);
      return;
    }
  }
  backend_call->Cancel();
}

void InferHandle::Ended() {
  std::shared_ptr<CallHandle> released;
  std::lock_guard lock(mu_);
  ended_ = true;
  released = std::move(backend_call_);
}

// One request from decision to end; the backend's observer, once per
// attempt.
struct RequestPipeline::Call final
    : StreamObserver,
      std::enable_shared_from_this<RequestPipeline::Call> {
  RequestPipeline* pipeline = nullptr;
  const v1::InferRequest* request = nullptr;  // The caller's, until OnEnd.
  InferOptions options;
  std::shared_ptr<InferSink> sink;
  std::shared_ptr<InferHandle> handle = std::make_shared<InferHandle>();
  v1::InferResponse response;        // Head, then the end's fields.
  policy::RequestFeatures features;  // Its spans point into this call.
  int route_index = -1;
  int task = -1;
  absl::Time start;
  int experiment = -1;
  int arm = -1;
  policy::Engine* engine = nullptr;
  std::vector<float> embedding;
  int64_t embedding_tokens = 0;
  // Per route: tried already; may take this attempt (Engine's `available`).
  std::vector<bool> tried;
  std::unique_ptr<bool[]> available;
  int attempts = 0;
  int retries = 0;            // Attempts that retried their route's backend.
  int route_retries = 0;      // ... of them, on the current route.
  policy::Decision decision;  // The current attempt's, for its retries.
  absl::Time attempt_start;
  bool probe = false;           // This attempt probes an ejected backend.
  bool holds_retry = false;     // A fallback holds room in the retry budget.
  bool deadline_bound = false;  // The request's deadline, not the route's
                                // timeout, bounds this attempt.
  bool started = false;         // The sink has heard OnStart.
  bool delivered = false;       // Some of the answer reached the sink.
  bool ended = false;
  // Why a failed attempt was not tried elsewhere, when a route could have
  // been; for the error.
  std::string fallback_refused;

  void OnDelta(BackendDelta delta) override {
    if (!started) {
      started = true;
      sink->OnStart(response);
    }
    delivered = true;
    sink->OnDelta(std::move(delta));
  }
  void OnEnd(absl::Status status, BackendResponse usage) override {
    pipeline->Finish(*this, std::move(status), std::move(usage));
  }
};

std::shared_ptr<InferHandle> RequestPipeline::Infer(
    const v1::InferRequest& request, InferOptions options,
    std::shared_ptr<InferSink> sink) {
  const v1::Config& config = *parts_.config;
  Metrics& metrics = *parts_.metrics;
  auto call = std::make_shared<Call>();
  call->pipeline = this;
  call->request = &request;
  call->options = options;
  call->sink = std::move(sink);
  call->start = absl::Now();
  std::shared_ptr<InferHandle> handle = call->handle;
  const int max_in_flight = config.server().max_in_flight();
  // Shed first, before any work: refused at once, never queued.
  if (!parts_.retry_budget->TryRequestStarted(max_in_flight)) {
    metrics.RecordRejected("RESOURCE_EXHAUSTED", RejectReason::kMaxInFlight);
    call->sink->OnEnd(absl::ResourceExhaustedError(absl::StrFormat(
                          "the gateway has %d requests in flight, its limit "
                          "(server.max_in_flight); try again later",
                          max_in_flight)),
                      call->response);
    return handle;
  }
  auto refuse = [&](const absl::Status& status, RejectReason reason) {
    parts_.retry_budget->RequestEnded();
    metrics.RecordRejected(absl::StatusCodeToString(status.code()), reason);
    call->sink->OnEnd(status, call->response);
  };
  int task = 0;
  int pinned_route = -1;
  if (absl::Status valid = Validate(request, &task, &pinned_route);
      !valid.ok()) {
    refuse(valid, RejectReason::kInvalidRequest);
    return handle;
  }
  const auth::TenantGrant* tenant = options.tenant;
  if (tenant != nullptr && !tenant->tasks[task]) {
    refuse(tenant->TaskDenied(config.tasks(task)), RejectReason::kNotPermitted);
    return handle;
  }
  if (tenant != nullptr && pinned_route >= 0 && !tenant->routes[pinned_route]) {
    refuse(tenant->RouteDenied(config.routes(pinned_route).name()),
           RejectReason::kNotPermitted);
    return handle;
  }
  policy::RequestFeatures features;
  features.task = task;
  features.unit_id = request.unit_id();
  features.pinned_route = pinned_route;
  features.max_cost_usd = request.constraints().max_cost_usd();
  features.min_accuracy = request.constraints().min_accuracy();
  features.uniform = UniformDraw();
  features.seed = RandomNonce();
  // A pinned request stays out of experiments: the pin wins. So does a
  // tenant's grant over an arm that pins a route it may not use.
  int experiment = pinned_route < 0 ? ExperimentFor(task) : -1;
  if (experiment >= 0 && tenant != nullptr) {
    for (int route : (*parts_.experiments)[experiment].arm_route) {
      if (route >= 0 && !tenant->routes[route]) experiment = -1;
    }
  }
  int arm = -1;
  policy::Engine* engine = parts_.engine;
  if (experiment >= 0) {
    const v1::Experiment& spec = config.experiments(experiment);
    const ExperimentArms& runtime = (*parts_.experiments)[experiment];
    bool sticky = spec.unit() != v1::EXPERIMENT_UNIT_REQUEST &&
                  !request.unit_id().empty();
    int bucket =
        sticky ? policy::ExperimentBucket(spec.salt(), request.unit_id())
               : static_cast<int>(UniformDraw() * policy::kExperimentBuckets);
    arm = policy::ArmForBucket(spec, bucket);
    if (runtime.arm_route[arm] >= 0) {
      features.pinned_route = runtime.arm_route[arm];
    } else {
      engine = runtime.arm_engine[arm].get();
    }
  }
  std::vector<float> embedding;
  if (engine->UsesContext(task)) embedding = EmbedPrompt(Question(request));
  call->features = features;
  call->task = task;
  call->experiment = experiment;
  call->arm = arm;
  call->engine = engine;
  call->embedding = std::move(embedding);
  call->features.embedding = call->embedding;
  const int routes = config.routes_size();
  call->tried.assign(routes, false);
  call->available.reset(new bool[routes]);
  call->features.available = absl::MakeConstSpan(call->available.get(), routes);
  auto decision = Decide(*call);
  // A pin to an ejected backend goes elsewhere only if the request allows.
  if (!decision.ok() && call->features.pinned_route >= 0 &&
      decision.status().code() == absl::StatusCode::kUnavailable &&
      MayFallBack(*call)) {
    call->route_index = call->features.pinned_route;
    call->tried[call->route_index] = true;
    decision = DecideFallback(*call, "ejected");
  }
  if (!decision.ok()) {
    refuse(decision.status(), RejectReason::kNoRoute);
    return handle;
  }
  StartAttempt(std::move(call), *std::move(decision));
  return handle;
}

absl::StatusOr<policy::Decision> RequestPipeline::Decide(Call& call) {
  const v1::Config& config = *parts_.config;
  const absl::Time now = absl::Now();
  const int routes = config.routes_size();
  std::vector<std::string> ejected;
  const auth::TenantGrant* tenant = call.options.tenant;
  for (int r = 0; r < routes; ++r) {
    // A tenant's routes bound every policy decision, first attempts and
    // fallbacks to the next best alike (fallback_routes: DecideFallback).
    if (tenant != nullptr && !tenant->routes[r]) {
      call.available[r] = false;
      continue;
    }
    const bool healthy = parts_.route_health[r]->Available(now);
    call.available[r] = !call.tried[r] && healthy;
    if (!call.tried[r] && !healthy) {
      ejected.push_back(absl::StrCat("route ", config.routes(r).name(),
                                     ": backend ", config.routes(r).backend(),
                                     " ",
                                     parts_.route_health[r]->Describe(now)));
    }
  }
  auto unavailable = [&](absl::string_view what) {
    return absl::UnavailableError(
        absl::StrCat(what, " (", absl::StrJoin(ejected, "; "), ")"));
  };
  const int pinned = call.features.pinned_route;
  if (pinned >= 0 && !call.available[pinned]) {
    return unavailable(absl::StrCat("route ", config.routes(pinned).name(),
                                    " cannot take requests now"));
  }
  absl::StatusOr<policy::Decision> decision =
      call.engine->Decide(call.features, *parts_.stats->Snapshot());
  // Turned away only for health: say so, the constraints were not at fault.
  if (!decision.ok() && !ejected.empty()) {
    return unavailable(absl::StrCat("no route can serve the request now: ",
                                    decision.status().message()));
  }
  if (!decision.ok() || call.experiment < 0) return decision;
  const v1::Experiment& spec = config.experiments(call.experiment);
  const ExperimentArms& runtime = (*parts_.experiments)[call.experiment];
  const int arm_route = runtime.arm_route[call.arm];
  if (call.attempts == 0) decision->propensity *= runtime.arm_share[call.arm];
  // A route arm decided by itself: the engine only saw its pin.
  decision->reason = absl::StrCat(
      "experiment ", spec.name(), " arm ", spec.arms(call.arm).name(), ": ",
      arm_route >= 0 && pinned >= 0
          ? absl::StrCat("route ", config.routes(arm_route).name())
          : decision->reason);
  decision->reason_class = "experiment";
  return decision;
}

absl::StatusOr<policy::Decision> RequestPipeline::DecideFallback(
    Call& call, absl::string_view failure) {
  const v1::Config& config = *parts_.config;
  const v1::Route& failed = config.routes(call.route_index);
  const std::string from =
      absl::StrCat("fallback from ", failed.name(), " (", failure, "): ");
  if (!failed.fallback_routes().empty()) {
    // The route's own list, in its order, and nothing else.
    const absl::Time now = absl::Now();
    for (const std::string& name : failed.fallback_routes()) {
      const int r = parts_.route_index.at(name);
      if (call.tried[r] || !parts_.route_health[r]->Available(now)) continue;
      if (call.options.tenant != nullptr && !call.options.tenant->routes[r]) {
        continue;
      }
      policy::Decision decision;
      decision.route = r;
      decision.policy = "fallback_routes";
      decision.reason = absl::StrCat(from, name, " (fallback_routes)");
      decision.reason_class = "fallback";
      return decision;
    }
    return absl::UnavailableError(
        absl::StrCat("no route of ", failed.name(),
                     ".fallback_routes is left untried and in service"));
  }
  call.features.pinned_route = -1;
  absl::StatusOr<policy::Decision> decision = Decide(call);
  if (!decision.ok()) return decision;
  // Most strategies' reasons start with the route they chose already.
  const std::string& chosen = config.routes(decision->route).name();
  decision->reason =
      absl::StartsWith(decision->reason, absl::StrCat(chosen, ":"))
          ? absl::StrCat(from, decision->reason)
          : absl::StrCat(from, chosen, ": ", decision->reason);
  decision->reason_class = "fallback";
  return decision;
}

void RequestPipeline::StartAttempt(std::shared_ptr<Call> call,
                                   policy::Decision decision) {
  const v1::Config& config = *parts_.config;
  Metrics& metrics = *parts_.metrics;
  const int route_index = decision.route;
  const v1::Route& route = config.routes(route_index);
  metrics.RecordDecision(route_index, call->task, decision.policy,
                         decision.reason_class);
  RequestIdParts id_parts;
  id_parts.route = route.name();
  id_parts.task = config.tasks(call->task);
  id_parts.unix_millis = absl::ToUnixMillis(call->start);
  id_parts.nonce = RandomNonce();
  if (call->experiment >= 0) {
    const v1::Experiment& spec = config.experiments(call->experiment);
    id_parts.experiment = spec.name();
    id_parts.arm = spec.arms(call->arm).name();
  }
  if (call->options.tenant != nullptr) {
    id_parts.tenant = call->options.tenant->name;
  }
  if (route_index != call->route_index) call->route_retries = 0;
  call->route_index = route_index;
  call->tried[route_index] = true;
  ++call->attempts;
  call->attempt_start = absl::Now();
  call->probe = parts_.route_health[route_index]->Begin(call->attempt_start);
  auto issued = parts_.signer->Issue(id_parts);
  if (!issued.ok()) {
    Finish(*call, issued.status(), {});
    return;
  }
  v1::InferResponse& response = call->response;
  response.set_request_id(*std::move(issued));
  response.set_route(route.name());
  response.set_route_kind(EnumName(route.kind()));
  response.set_backend(route.backend());
  response.set_model(route.model());
  response.set_task(id_parts.task);
  response.clear_citations();
  v1::Decision* wire_decision = response.mutable_decision();
  wire_decision->set_policy(decision.policy);
  wire_decision->set_reason(decision.reason);
  wire_decision->set_propensity(decision.propensity);
  wire_decision->set_experiment(id_parts.experiment);
  wire_decision->set_arm(id_parts.arm);
  call->decision = std::move(decision);
  if (route.kind() != v1::ROUTE_KIND_RAG) {
    CallBackend(std::move(call));
    return;
  }
  // Retrieval may take milliseconds (or an embedding server's round trip):
  // never on a front's thread. The wait for a thread ends at the deadline.
  const absl::Time deadline = call->options.deadline;
  parts_.retrieval_pool->Submit(
      [this, call = std::move(call)](absl::Status admitted) mutable {
        if (admitted.code() == absl::StatusCode::kDeadlineExceeded) {
          Finish(*call, std::move(admitted), {});
          return;
        }
        if (!admitted.ok()) {
          EndAttempt(*call, admitted, AttemptResult::kNeutral);
          Conclude(*call);
          parts_.metrics->RecordRejected(
              absl::StatusCodeToString(admitted.code()),
              RejectReason::kRetrievalQueue);
          call->sink->OnEnd(admitted, call->response);
          return;
        }
        CallBackend(std::move(call));
      },
      deadline);
}

void RequestPipeline::CallBackend(std::shared_ptr<Call> call) {
  const v1::Route& route = parts_.config->routes(call->route_index);
  absl::StatusOr<BackendRequest> backend_request =
      absl::InternalError("building the backend request failed");
  try {
    backend_request = BuildBackendRequest(*call);
  } catch (const std::exception& e) {
    backend_request = absl::InternalError(
        absl::StrCat("building the backend request failed: ", e.what()));
  }
  if (!backend_request.ok()) {
    Finish(*call, backend_request.status(), {});
    return;
  }
  if (call->handle->cancelled()) {
    Finish(*call, absl::CancelledError("the caller went away"), {});
    return;
  }
  // The caller's deadline bounds the backend call too.
  const absl::Duration left = call->options.deadline - absl::Now();
  const absl::Duration timeout =
      std::min(parts_.route_timeout[call->route_index], left);
  call->deadline_bound = left < parts_.route_timeout[call->route_index];
  if (timeout <= absl::ZeroDuration()) {
    Finish(*call,
           absl::DeadlineExceededError(
               "the request's deadline passed before a backend was called"),
           {});
    return;
  }
  backend_request->timeout = timeout;
  backend_request->stream = call->options.stream;
  // A rag request embeds its question to search: priced per token.
  if (route.kind() == v1::ROUTE_KIND_RAG) {
    call->embedding_tokens =
        static_cast<int64_t>(retrieval::Words(Question(*call->request)).size());
  }
  std::shared_ptr<InferHandle> handle = call->handle;
  Backend* backend = parts_.route_backend[call->route_index];
  handle->Attach(backend->Stream(*std::move(backend_request), std::move(call)));
}

namespace {

// What a failed attempt's status says of its backend, for health and
// fallbacks: the class of failure, or none when the request itself was
// refused, cancelled or failed in arbiter.
std::optional<v1::FailureClass> FailureClassOf(const absl::Status& status) {
  std::optional<BackendError> error = BackendErrorOf(status);
  if (!error.has_value()) return std::nullopt;
  switch (*error) {
    case BackendError::kConnect:
    case BackendError::kTransport:
      return v1::FAILURE_CLASS_UNAVAILABLE;
    case BackendError::kTimeout:
      return v1::FAILURE_CLASS_TIMEOUT;
    case BackendError::kRateLimited:
    case BackendError::kQueueFull:
      return v1::FAILURE_CLASS_RATE_LIMITED;
    case BackendError::kHttp5xx:
    case BackendError::kMalformed:
    case BackendError::kTooLarge:
      return v1::FAILURE_CLASS_SERVER_ERROR;
    case BackendError::kHttp3xx:
    case BackendError::kHttp4xx:
    case BackendError::kHttpOther:
    case BackendError::kInternal:
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

bool RequestPipeline::MayFallBack(const Call& call) const {
  return call.request->route().empty() || call.request->allow_fallback();
}

const v1::Fallback& RequestPipeline::FallbackOf(int task) const {
  const v1::Config& config = *parts_.config;
  auto it = config.task_policies().find(config.tasks(task));
  return it != config.task_policies().end() ? it->second.fallback()
                                            : config.policy().fallback();
}

void RequestPipeline::EndAttempt(Call& call, const absl::Status& status,
                                 AttemptResult result) {
  const absl::Time now = absl::Now();
  parts_.route_health[call.route_index]->End(call.probe, result, now);
  call.probe = false;
  if (call.holds_retry) {
    call.holds_retry = false;
    parts_.retry_budget->RetryEnded();
  }
  v1::Attempt* attempt = call.response.add_attempts();
  const v1::Route& route = parts_.config->routes(call.route_index);
  attempt->set_route(route.name());
  attempt->set_backend(route.backend());
  attempt->set_status(absl::StatusCodeToString(status.code()));
  attempt->set_error(std::string(status.message()));
  if (std::optional<v1::FailureClass> failure = FailureClassOf(status)) {
    attempt->set_failure(EnumName(*failure));
  }
  attempt->set_latency_seconds(absl::ToDoubleSeconds(now - call.attempt_start));
}

absl::Status RequestPipeline::WithAttempts(const Call& call,
                                           const absl::Status& status) {
  std::vector<std::string> tried;
  for (const v1::Attempt& attempt : call.response.attempts()) {
    tried.push_back(absl::StrCat(
        attempt.route(), " ",
        attempt.failure().empty() ? attempt.status() : attempt.failure()));
  }
  std::string message = absl::StrCat(
      status.message(), " (attempts: ", absl::StrJoin(tried, ", "), ")");
  if (!call.fallback_refused.empty()) {
    absl::StrAppend(&message, "; no fallback: ", call.fallback_refused);
  }
  return absl::Status(status.code(), message);
}

void RequestPipeline::Conclude(Call& call) {
  call.ended = true;
  call.handle->Ended();
  parts_.retry_budget->RequestEnded();
  parts_.metrics->RecordAttempts(call.attempts);
}

bool RequestPipeline::FallBack(Call& call, v1::FailureClass failure,
                               const BackendResponse& usage) {
  const int task = call.task;
  const int from = call.route_index;
  const v1::Fallback& settings = FallbackOf(task);
  if (call.delivered ||
      call.attempts - call.retries >= settings.max_attempts() ||
      !MayFallBack(call) || call.handle->cancelled() ||
      absl::c_find(settings.on(), failure) == settings.on().end() ||
      call.options.deadline - absl::Now() <= absl::Milliseconds(1)) {
    return false;
  }
  if (absl::c_all_of(call.tried, [](bool tried) { return tried; })) {
    call.fallback_refused = "every route was tried";
    return false;
  }
  auto decision = DecideFallback(call, EnumName(failure));
  if (!decision.ok()) {
    call.fallback_refused = std::string(decision.status().message());
    return false;
  }
  if (!parts_.retry_budget->TryStartRetry()) {
    parts_.metrics->RecordRetryBudgetExhausted();
    call.fallback_refused = "the retry budget is spent (server.retry_budget)";
    return false;
  }
  ChargeFailedAttempt(call, usage);
  parts_.metrics->RecordFallback(from, decision->route, EnumName(failure));
  call.holds_retry = true;
  // The backend still holds this call as its observer until OnEnd returns:
  // the next attempt shares it.
  StartAttempt(call.shared_from_this(), *std::move(decision));
  return true;
}

void RequestPipeline::ChargeFailedAttempt(Call& call,
                                          const BackendResponse& usage) {
  // It counts against the route's error rate and its backend's health,
  // never its accuracy; what it billed is costed.
  const int route_index = call.route_index;
  const v1::Route& route = parts_.config->routes(route_index);
  const Tally tally = TallyOf(call);
  const GatewayParts& live = *tally.live.parts;
  CountAttemptError(tally, call);
  if (usage.input_tokens <= 0 && usage.output_tokens <= 0) return;
  const policy::RequestCost priced = policy::PriceRequest(
      route.pricing(), usage.input_tokens, usage.output_tokens,
      route.kind() == v1::ROUTE_KIND_RAG, call.embedding_tokens);
  if (tally.route >= 0) {
    std::lock_guard lock(*live.economics_mu);
    live.economics->RecordRequest(tally.route, tally.task, priced, absl::Now());
  }
  parts_.metrics->RecordFailedAttemptBill(
      route_index, call.task, usage.input_tokens, usage.output_tokens, priced);
}

bool RequestPipeline::Retry(Call& call, v1::FailureClass failure,
                            const absl::Status& status,
                            const BackendResponse& usage) {
  const v1::Retry& settings = *parts_.route_retry[call.route_index];
  if (call.delivered || call.route_retries >= settings.max_retries() ||
      failure == v1::FAILURE_CLASS_TIMEOUT || call.handle->cancelled()) {
    return false;
  }
  // Full jitter (a random share of the exponential step) keeps retries
  // from coming back in waves; the backend's Retry-After wins if later.
  const absl::Duration step = std::min(
      absl::Milliseconds(settings.backoff_max_ms()),
      absl::Milliseconds(settings.backoff_base_ms()) *
          static_cast<double>(int64_t{1} << std::min(call.route_retries, 20)));
  absl::Duration backoff = step * UniformDraw();
  if (std::optional<absl::Duration> after = RetryAfterOf(status)) {
    backoff = std::max(backoff, *after);
  }
  // A retry that could not finish in time leaves the time to a fallback.
  if (absl::Now() + backoff >= call.options.deadline - absl::Milliseconds(1) ||
      !parts_.route_health[call.route_index]->Available(absl::Now() +
                                                        backoff)) {
    return false;
  }
  if (!parts_.retry_budget->TryStartRetry()) {
    parts_.metrics->RecordRetryBudgetExhausted();
    return false;
  }
  ChargeFailedAttempt(call, usage);
  const v1::Route& route = parts_.config->routes(call.route_index);
  parts_.metrics->RecordRetry(route.backend(), EnumName(failure));
  call.holds_retry = true;
  ++call.retries;
  ++call.route_retries;
  policy::Decision decision = call.decision;
  decision.reason =
      absl::StrCat("retry ", call.route_retries, " on ", route.name(), " (",
                   EnumName(failure), "): ", call.decision.reason);
  // The backend still holds this call as its observer until OnEnd returns;
  // the retry starts on the timer's thread once the backoff is over.
  parts_.retry_timer->RunAfter(
      backoff, [this, call = call.shared_from_this(),
                decision = std::move(decision)]() mutable {
        StartAttempt(std::move(call), std::move(decision));
      });
  return true;
}

void RequestPipeline::Finish(Call& call, absl::Status status,
                             BackendResponse usage) {
  if (call.ended) return;
  const bool cancelled = status.code() == absl::StatusCode::kCancelled;
  const std::optional<v1::FailureClass> failure =
      status.ok() ? std::nullopt : FailureClassOf(status);
  // A request shed by the gateway's own queue for the backend never
  // reached it: neither the backend's success nor its failure.
  const bool shed = BackendErrorOf(status) == BackendError::kQueueFull;
  EndAttempt(call, status,
             status.ok()                    ? AttemptResult::kOk
             : failure.has_value() && !shed ? AttemptResult::kFailed
                                            : AttemptResult::kNeutral);
  if (failure.has_value() && (Retry(call, *failure, status, usage) ||
                              FallBack(call, *failure, usage))) {
    return;
  }
  Conclude(call);
  const int route_index = call.route_index;
  const int task = call.task;
  const int experiment = call.experiment;
  const int arm = call.arm;
  const v1::Route& route = parts_.config->routes(route_index);
  Metrics& metrics = *parts_.metrics;
  const double latency = absl::ToDoubleSeconds(absl::Now() - call.start);
  v1::InferResponse& response = call.response;
  if (!status.ok()) RefuseFeedbackOn(call);
  if (!status.ok() && !cancelled) {
    {
      const Tally tally = TallyOf(call);
      CountAttemptError(tally, call);
      if (tally.experiment >= 0) {
        tally.live.parts->experiment_stats->RecordError(tally.experiment,
                                                        tally.arm, latency);
      }
    }
    if (experiment >= 0) {
      metrics.RecordExperimentRequest(experiment, arm, false);
    }
    metrics.RecordFailure(route_index, task, OutcomeOf(status), latency);
    if (shed) {
      // Refused by the queue, or timed out in it: the code says which.
      metrics.RecordRejected(absl::StatusCodeToString(status.code()),
                             RejectReason::kBackendQueue);
    } else if (status.code() == absl::StatusCode::kDeadlineExceeded &&
               call.deadline_bound) {
      // The backend timed out on the request's budget: say whose it was.
      status = absl::DeadlineExceededError(absl::StrCat(
          "the request's deadline (",
          absl::FormatDuration(absl::Ceil(call.options.deadline - call.start,
                                          absl::Milliseconds(1))),
          " after it arrived) passed while backend \"", route.backend(),
          "\" was answering"));
    }
    if (call.attempts > 1 || !call.fallback_refused.empty()) {
      status = WithAttempts(call, status);
    }
    call.sink->OnEnd(status, response);
    return;
  }
  // What was produced is billed, answered or cancelled.
  const policy::RequestCost priced = policy::PriceRequest(
      route.pricing(), usage.input_tokens, usage.output_tokens,
      route.kind() == v1::ROUTE_KIND_RAG, call.embedding_tokens);
  const double cost = priced.total_usd();
  {
    // One hold for what is counted; released before the sink is called.
    const Tally tally = TallyOf(call);
    const GatewayParts& live = *tally.live.parts;
    if (tally.route >= 0) {
      std::lock_guard lock(*live.economics_mu);
      live.economics->RecordRequest(tally.route, tally.task, priced,
                                    absl::Now());
    }
    if (!cancelled && tally.route >= 0) {
      live.stats->RecordCompletion(
          tally.route, tally.task,
          {usage.input_tokens, usage.output_tokens, cost, latency});
    }
    if (!cancelled && tally.experiment >= 0) {
      live.experiment_stats->RecordCompletion(tally.experiment, tally.arm, cost,
                                              latency);
    }
  }
  v1::Usage* wire_usage = response.mutable_usage();
  wire_usage->set_input_tokens(usage.input_tokens);
  wire_usage->set_output_tokens(usage.output_tokens);
  wire_usage->set_estimated(!usage.usage_reported);
  response.set_cost_usd(cost);
  response.set_latency_seconds(latency);
  response.set_finish_reason(cancelled ? "cancelled" : usage.finish_reason);
  if (!usage.fields_json.empty()) {
    response.set_passthrough_json(std::move(usage.fields_json));
  }
  if (cancelled) {
    // Neither an error nor an answer the policy could be judged on.
    if (!call.started) {
      call.started = true;
      call.sink->OnStart(response);
    }
    metrics.RecordCancelled(route_index, task, usage.input_tokens,
                            usage.output_tokens, priced, latency);
    call.sink->OnEnd(status, response);
    return;
  }
  metrics.RecordCompletion(route_index, task, usage.input_tokens,
                           usage.output_tokens, priced, latency);
  call.engine->ObserveCost(task, cost);
  if (experiment >= 0) {
    metrics.RecordExperimentRequest(experiment, arm, true);
  }
  parts_.decisions->Record(response.request_id(), call.embedding);
  if (!call.started) {
    call.started = true;
    call.sink->OnStart(response);
  }
  call.sink->OnEnd(absl::OkStatus(), response);
}

void RequestPipeline::RefuseFeedbackOn(const Call& call) {
  auto verified =
      parts_.signer->Verify(call.response.request_id(), absl::Now());
  if (!verified.ok()) return;
  parts_.judged->MarkUnanswered(verified->mac, verified->issued);
  // Stored as judged: after a restart its feedback is refused as a repeat.
  if (parts_.durable) {
    const LiveParts live = parts_.live();
    live.parts->state_sync->NoteJudged(verified->mac, verified->issued);
  }
}

void RequestPipeline::CountAttemptError(const Tally& tally, const Call& call) {
  if (tally.route < 0) return;
  tally.live.parts->stats->RecordError(
      tally.route, tally.task,
      absl::ToDoubleSeconds(absl::Now() - call.attempt_start));
}

RequestPipeline::Tally RequestPipeline::TallyOf(const Call& call) const {
  Tally tally{parts_.live(), call.route_index, call.task, call.experiment,
              call.arm};
  const GatewayParts& live = *tally.live.parts;
  if (&live == &parts_) return tally;
  // A reload retired this generation: the same names in the live one.
  const v1::Config& config = *parts_.config;
  auto route = live.route_index.find(config.routes(call.route_index).name());
  auto task = live.task_index.find(config.tasks(call.task));
  const bool found =
      route != live.route_index.end() && task != live.task_index.end();
  tally.route = found ? route->second : -1;
  tally.task = found ? task->second : -1;
  tally.experiment = tally.arm = -1;
  if (call.experiment < 0) return tally;
  const v1::Experiment& spec = config.experiments(call.experiment);
  for (int e = 0; e < live.config->experiments_size(); ++e) {
    const v1::Experiment& now = live.config->experiments(e);
    if (now.name() != spec.name()) continue;
    for (int a = 0; a < now.arms_size(); ++a) {
      if (now.arms(a).name() == spec.arms(call.arm).name()) {
        tally.experiment = e;
        tally.arm = a;
      }
    }
  }
  return tally;
}

std::vector<float> RequestPipeline::EmbedPrompt(absl::string_view text) const {
  // Prompts stay on the local embedder when vectors come from a server:
  // a routing decision should not wait on the network.
  if (parts_.prompt_embedder == nullptr) {
    if (auto vector = parts_.corpus->Embed(text); vector.ok()) return *vector;
  }
  return parts_.prompt_embedder != nullptr
             ? parts_.prompt_embedder->Embed(text)
             : std::vector<float>(parts_.config->retrieval().embedding_dim());
}

namespace {

// Joins the deltas into the response.
class WholeAnswerSink final : public InferSink {
 public:
  WholeAnswerSink(v1::InferResponse* response,
                  absl::AnyInvocable<void(absl::Status) &&> done)
      : response_(response), done_(std::move(done)) {}

  void OnStart(const v1::InferResponse&) override {}
  void OnDelta(BackendDelta delta) override {
    if (text_.empty()) {
      text_ = std::move(delta.text);
    } else {
      text_ += delta.text;
    }
  }
  void OnEnd(const absl::Status& status, v1::InferResponse& response) override {
    if (status.ok()) {
      *response_ = std::move(response);
      response_->set_text(std::move(text_));
    }
    std::move(done_)(status);
  }

 private:
  v1::InferResponse* const response_;
  absl::AnyInvocable<void(absl::Status) &&> done_;
  std::string text_;
};

}  // namespace

std::shared_ptr<InferHandle> InferWhole(
    RequestPipeline& pipeline, const v1::InferRequest& request,
    absl::Time deadline, v1::InferResponse* response,
    absl::AnyInvocable<void(absl::Status) &&> done,
    const auth::TenantGrant* tenant) {
  InferOptions options;
  options.deadline = deadline;
  options.tenant = tenant;
  return pipeline.Infer(
      request, options,
      std::make_shared<WholeAnswerSink>(response, std::move(done)));
}

int RequestPipeline::ExperimentFor(int task) const {
  const std::vector<ExperimentArms>& experiments = *parts_.experiments;
  for (size_t e = 0; e < experiments.size(); ++e) {
    if (experiments[e].tasks[task]) return static_cast<int>(e);
  }
  return -1;
}

absl::Status RequestPipeline::Validate(const v1::InferRequest& request,
                                       int* task, int* pinned_route) const {
  const v1::Config& config = *parts_.config;
  size_t size = request.ByteSizeLong();
  if (size > static_cast<size_t>(config.server().max_request_bytes())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request: %d bytes exceeds the limit of %d (server.max_request_bytes)",
        size, config.server().max_request_bytes()));
  }
  if (request.messages().empty()) {
    return absl::InvalidArgumentError("messages: must not be empty");
  }
  for (int i = 0; i < request.messages_size(); ++i) {
    const v1::Role role = request.messages(i).role();
    if (role == v1::ROLE_UNSPECIFIED || !v1::Role_IsValid(role)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i, "].role: must be ", EnumNames(*v1::Role_descriptor()),
          ", got ",
          role == v1::ROLE_UNSPECIFIED ? "none" : std::to_string(role)));
    }
  }
  for (int i = 0; i < request.messages_size(); ++i) {
    if (absl::Status valid = ValidateToolFields(request.messages(i), i);
        !valid.ok()) {
      return valid;
    }
  }
  const v1::ChatMessage& last = *request.messages().rbegin();
  if (last.role() != v1::ROLE_USER && last.role() != v1::ROLE_TOOL) {
    return absl::InvalidArgumentError(absl::StrCat(
        "messages[", request.messages_size() - 1,
        "].role: the last message must be the user's or a tool's result"));
  }
  // The user's last question is what the policy and retrieval read.
  int question = request.messages_size() - 1;
  while (question >= 0 && request.messages(question).role() != v1::ROLE_USER) {
    --question;
  }
  if (question < 0) {
    return absl::InvalidArgumentError("messages: there must be a user message");
  }
  if (request.messages(question).content().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages[", question, "].content: must not be empty"));
  }
  const std::string& task_name =
      request.task().empty() ? config.default_task() : request.task();
  auto task_it = parts_.task_index.find(task_name);
  if (task_it == parts_.task_index.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("task: unknown task ", QuoteInput(task_name),
                     " (known: ", absl::StrJoin(config.tasks(), ", "), ")"));
  }
  *task = task_it->second;
  *pinned_route = -1;
  if (!request.route().empty()) {
    auto route_it = parts_.route_index.find(request.route());
    if (route_it == parts_.route_index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("route: unknown route ", QuoteInput(request.route()),
                       " (known: ", KnownNames(config.routes()), ")"));
    }
    *pinned_route = route_it->second;
  }
  if (request.limits().max_output_tokens() < 0) {
    return absl::InvalidArgumentError("limits.max_output_tokens: must be >= 0");
  }
  if (request.limits().has_temperature() &&
      !(request.limits().temperature() >= 0 &&
        request.limits().temperature() <= 2)) {
    return absl::InvalidArgumentError("limits.temperature: must be in [0, 2]");
  }
  if (request.limits().has_top_p() &&
      !(request.limits().top_p() > 0 && request.limits().top_p() <= 1)) {
    return absl::InvalidArgumentError("limits.top_p: must be in (0, 1]");
  }
  if (request.limits().stop_size() > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("limits.stop: at most 4 sequences, got ",
                     request.limits().stop_size()));
  }
  if (!request.passthrough_json().empty()) {
    auto fields = json::Parse(request.passthrough_json());
    if (!fields.ok() || !fields->is_object()) {
      return absl::InvalidArgumentError(
          "passthrough_json: must be a JSON object");
    }
  }
  if (!(request.constraints().max_cost_usd() >= 0)) {
    return absl::InvalidArgumentError("constraints.max_cost_usd: must be >= 0");
  }
  if (!(request.constraints().min_accuracy() >= 0 &&
        request.constraints().min_accuracy() <= 1)) {
    return absl::InvalidArgumentError(
        "constraints.min_accuracy: must be in [0, 1]");
  }
  return absl::OkStatus();
}

absl::StatusOr<BackendRequest> RequestPipeline::BuildBackendRequest(
    Call& call) {
  const v1::Route& route = parts_.config->routes(call.route_index);
  const v1::InferRequest& request = *call.request;
  v1::InferResponse* response = &call.response;
  BackendRequest out;
  out.model = route.model();
  out.max_output_tokens = request.limits().max_output_tokens() > 0
                              ? request.limits().max_output_tokens()
                              : route.max_output_tokens();
  if (request.limits().has_temperature()) {
    out.temperature = request.limits().temperature();
  }
  if (request.limits().has_top_p()) out.top_p = request.limits().top_p();
  out.stop.assign(request.limits().stop().begin(),
                  request.limits().stop().end());
  if (request.limits().has_seed()) out.seed = request.limits().seed();
  out.passthrough_json = request.passthrough_json();
  std::string system =
      route.kind() == v1::ROUTE_KIND_FINE_TUNED ? "" : route.system_prompt();
  if (route.kind() == v1::ROUTE_KIND_RAG) {
    const std::string& question = Question(request);
    absl::Time start = absl::Now();
    auto found = parts_.corpus->Search(question, route.rag().top_k(),
                                       parts_.search_mode);
    if (!found.ok()) {
      return absl::Status(found.status().code(),
                          absl::StrCat("retrieval for route \"", route.name(),
                                       "\": ", found.status().message()));
    }
    std::vector<retrieval::Chunk> chunks;
    for (retrieval::SearchHit& hit : *found) {
      chunks.push_back({hit.chunk_id, std::move(hit.doc_id),
                        std::move(hit.doc_title), 0, std::move(hit.text)});
    }
    std::vector<retrieval::Hit> hits;
    for (size_t i = 0; i < chunks.size(); ++i) {
      hits.push_back({&chunks[i], static_cast<float>((*found)[i].score)});
    }
    retrieval::Context context =
        retrieval::AssembleContext(hits, route.rag().max_context_tokens());
    parts_.metrics->RecordRetrieval(absl::ToDoubleSeconds(absl::Now() - start));
    absl::StrAppend(&system, system.empty() ? "" : "\n\n",
                    "Answer from the context below and cite the sources you "
                    "use by their markers.\n\nContext:\n",
                    context.block);
    for (const auto& cited : context.citations) {
      v1::Citation* citation = response->add_citations();
      citation->set_doc_id(cited.chunk->doc_id);
      citation->set_chunk_id(cited.chunk->id);
      citation->set_score(cited.score);
      citation->set_marker(cited.marker);
    }
  }
  if (!system.empty()) {
    out.messages.push_back({EnumName(v1::ROLE_SYSTEM), std::move(system)});
  }
  if (route.kind() == v1::ROUTE_KIND_PROMPTED) {
    for (const v1::Example& example : route.examples()) {
      out.messages.push_back({EnumName(v1::ROLE_USER), example.user()});
      out.messages.push_back(
          {EnumName(v1::ROLE_ASSISTANT), example.assistant()});
    }
  }
  for (const v1::ChatMessage& message : request.messages()) {
    out.messages.push_back({EnumName(message.role()), message.content(),
                            message.tool_calls_json(), message.tool_call_id(),
                            message.name()});
  }
  return out;
}

}  // namespace arbiter
