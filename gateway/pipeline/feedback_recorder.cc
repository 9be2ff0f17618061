#include "gateway/pipeline/feedback_recorder.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/quote.h"

namespace arbiter {

absl::StatusOr<v1::FeedbackResponse> FeedbackRecorder::Record(
    const v1::FeedbackRequest& request,
    std::optional<absl::string_view> tenant) {
  double score = 0;
  bool graded = false;
  switch (request.outcome_case()) {
    case v1::FeedbackRequest::kCorrect:
      score = request.correct() ? 1 : 0;
      break;
    case v1::FeedbackRequest::kScore:
      if (!(request.score() >= 0 && request.score() <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("score: must be in [0, 1], got ", request.score()));
      }
      score = request.score();
      graded = true;
      break;
    case v1::FeedbackRequest::OUTCOME_NOT_SET:
      return absl::InvalidArgumentError("outcome: set correct or score");
  }
  if (request.request_id().empty()) {
    return absl::InvalidArgumentError("request_id: must not be empty");
  }
  auto verified = parts_.signer->Verify(request.request_id(), absl::Now());
  if (!verified.ok()) {
    parts_.metrics->RecordFeedbackRejected(RejectionOf(verified.status()));
    return verified.status();
  }
  if (tenant.has_value() && verified->parts.tenant != *tenant) {
    return absl::PermissionDeniedError(absl::StrCat(
        "tenant ", *tenant,
        " may not give feedback on this request: another tenant's key made "
        "it"));
  }
  // Counted by the live generation (a reload may have retired the one this
  // call came in on), which holds no handover off while it is counted.
  const LiveParts held = parts_.live();
  const GatewayParts& live = *held.parts;
  const RequestIdParts* parts = &verified->parts;
  // The id says where the request went; the decision log adds the prompt's
  // embedding. An id it no longer holds (evicted, or served by another
  // replica) is credited from the id alone; judged_ says whether it was.
  auto route_it = live.route_index.find(parts->route);
  auto task_it = live.task_index.find(parts->task);
  if (route_it == live.route_index.end() || task_it == live.task_index.end()) {
    return absl::NotFoundError(
        absl::StrCat("request_id: route ", QuoteInput(parts->route),
                     " or task ", QuoteInput(parts->task),
                     " of this request is not in the current config"));
  }
  const int route = route_it->second;
  const int task = task_it->second;
  int experiment = -1;
  int arm = -1;
  for (int e = 0; e < live.config->experiments_size(); ++e) {
    const v1::Experiment& spec = live.config->experiments(e);
    if (spec.name() != parts->experiment) continue;
    for (int a = 0; a < spec.arms_size(); ++a) {
      if (spec.arms(a).name() == parts->arm) {
        experiment = e;
        arm = a;
      }
    }
  }
  // Counted once, whether the first came before a restart, left the
  // decision log, or reached another replica's copy of this id: the MAC,
  // which only this deployment's key makes, names the request.
  const std::string& judged_key = verified->mac;
  const absl::Time issued = verified->issued;
  const auto applying = live.state_sync->HoldForFeedback();
  switch (live.judged->Insert(judged_key, issued)) {
    case Judging::kFirst:
      break;
    case Judging::kRepeat:
      live.metrics->RecordFeedbackDuplicate();
      return absl::AlreadyExistsError(
          "request_id: feedback for this request was already counted");
    case Judging::kUnanswered:
      live.metrics->RecordFeedbackUnanswered();
      return absl::FailedPreconditionError(
          "request_id: this request ended without an answer (it failed or "
          "was cancelled): there is nothing to judge");
  }
  if (live.durable) live.state_sync->NoteJudged(judged_key, issued);
  auto embedding = live.decisions->TakeFeedback(request.request_id());
  if (embedding.ok() && !embedding->empty()) {
    const bool arm_engine =
        experiment >= 0 &&
        (*live.experiments)[experiment].arm_engine[arm] != nullptr;
    policy::Engine* engine =
        arm_engine ? (*live.experiments)[experiment].arm_engine[arm].get()
                   : live.engine;
    engine->ObserveOutcome(task, route, *embedding, score);
    if (live.durable) {
      live.state_sync->NoteOutcome(arm_engine ? experiment : -1,
                                   arm_engine ? arm : -1, task, route,
                                   *embedding, score);
    }
  }
  if (experiment >= 0) {
    live.experiment_stats->RecordFeedback(experiment, arm, score);
    live.metrics->RecordExperimentFeedback(experiment, arm, score);
  }
  live.stats->RecordFeedback(route, task, score);
  live.metrics->RecordFeedback(route, task, score, graded);
  {
    std::lock_guard lock(*live.economics_mu);
    live.economics->RecordFeedback(route, task, score, absl::Now());
  }
  v1::FeedbackResponse response;
  response.set_route(live.config->routes(route).name());
  response.set_task(live.config->tasks(task));
  return response;
}

}  // namespace arbiter
