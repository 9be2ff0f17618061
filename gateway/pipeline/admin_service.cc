#include "gateway/pipeline/admin_service.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/quote.h"
#include "gateway/config.h"
#include "policy/experiment.h"

namespace arbiter {
namespace {

v1::CostBreakdown Breakdown(const policy::RequestCost& cost) {
  v1::CostBreakdown breakdown;
  breakdown.set_input_tokens_usd(cost.input_usd);
  breakdown.set_output_tokens_usd(cost.output_usd);
  breakdown.set_request_fee_usd(cost.request_usd);
  breakdown.set_retrieval_usd(cost.retrieval_usd);
  breakdown.set_embedding_usd(cost.embedding_usd);
  breakdown.set_total_usd(cost.total_usd());
  return breakdown;
}

// The route a view is limited to: -1 for all (empty), NOT_FOUND if unknown.
absl::StatusOr<int> RouteFilter(const GatewayParts& parts,
                                const std::string& name) {
  if (name.empty()) return -1;
  auto it = parts.route_index.find(name);
  if (it == parts.route_index.end()) {
    return absl::NotFoundError(
        absl::StrCat("route: unknown route ", QuoteInput(name)));
  }
  return it->second;
}

}  // namespace

absl::StatusOr<v1::GetEconomicsResponse> AdminService::GetEconomics(
    const v1::GetEconomicsRequest& request) const {
  auto route = RouteFilter(parts_, request.route());
  if (!route.ok()) return route.status();
  const int only = *route;
  const policy::EconomicsSnapshot snapshot = parts_.EconomicsNow();
  const v1::Config& config = *parts_.config;
  v1::GetEconomicsResponse response;
  response.set_as_of(
      absl::FormatTime(absl::RFC3339_sec, snapshot.as_of, absl::UTCTimeZone()));
  response.set_uptime_seconds(absl::ToDoubleSeconds(snapshot.uptime));
  response.set_window_seconds(absl::ToDoubleSeconds(snapshot.window));
  auto set = [](const std::optional<double>& value, auto setter) {
    if (value.has_value()) setter(*value);
  };
  for (const policy::RouteEconomics& economics : snapshot.routes) {
    if (only >= 0 && economics.route != only) continue;
    const v1::Route& route = config.routes(economics.route);
    v1::RouteEconomics& out = *response.add_routes();
    out.set_route(route.name());
    out.set_kind(EnumName(route.kind()));
    out.set_requests(economics.requests);
    *out.mutable_request_cost() = Breakdown(economics.request_cost);
    out.set_hosting_usd(economics.hosting_usd);
    out.set_training_amortized_usd(economics.training_amortized_usd);
    out.set_total_usd(economics.total_usd());
    out.set_judged(economics.judged);
    out.set_correct(economics.correct);
    set(economics.accuracy, [&](double v) { out.set_accuracy(v); });
    set(economics.cost_per_request_usd,
        [&](double v) { out.set_cost_per_request_usd(v); });
    set(economics.cost_per_correct_usd,
        [&](double v) { out.set_cost_per_correct_usd(v); });
    set(economics.window_cost_per_correct_usd,
        [&](double v) { out.set_window_cost_per_correct_usd(v); });
    out.set_requests_per_day(economics.requests_per_day);
    if (!economics.breakeven.has_value()) continue;
    const policy::BreakEven& be = *economics.breakeven;
    v1::BreakEven& wire = *out.mutable_breakeven();
    wire.set_baseline_route(config.routes(be.baseline).name());
    wire.set_training_cost_usd(be.training_cost_usd);
    wire.set_training_date(route.training().date());
    set(be.baseline_cost_per_request_usd,
        [&](double v) { wire.set_baseline_cost_per_request_usd(v); });
    set(be.savings_per_request_usd,
        [&](double v) { wire.set_savings_per_request_usd(v); });
    wire.set_savings_usd(be.savings_usd);
    wire.set_remaining_usd(be.remaining_usd);
    wire.set_recovered_share(be.recovered_share);
    wire.set_recovered(be.recovered);
    wire.set_never(be.never);
    wire.set_never_reason(be.never_reason);
    set(be.requests_remaining,
        [&](double v) { wire.set_requests_remaining(v); });
    if (be.days_remaining.has_value()) {
      wire.set_days_remaining(*be.days_remaining);
      // Far futures are capped: absl::Time saturates, a date does not.
      const double days = std::min(*be.days_remaining, 365.0 * 1000);
      wire.set_break_even_date(
          absl::FormatTime("%Y-%m-%d", snapshot.as_of + absl::Hours(24 * days),
                           absl::UTCTimeZone()));
    }
    set(be.cost_per_correct_usd,
        [&](double v) { wire.set_cost_per_correct_usd(v); });
    set(be.baseline_cost_per_correct_usd,
        [&](double v) { wire.set_baseline_cost_per_correct_usd(v); });
    wire.set_verdict(be.verdict);
  }
  for (const policy::TaskEconomics& economics : snapshot.tasks) {
    if (only >= 0 && economics.route != only) continue;
    v1::TaskEconomics& out = *response.add_tasks();
    out.set_route(config.routes(economics.route).name());
    out.set_task(config.tasks(economics.task));
    out.set_requests(economics.requests);
    *out.mutable_request_cost() = Breakdown(economics.request_cost);
    out.set_fixed_usd(economics.fixed_usd);
    out.set_judged(economics.judged);
    out.set_correct(economics.correct);
    set(economics.accuracy, [&](double v) { out.set_accuracy(v); });
    set(economics.cost_per_request_usd,
        [&](double v) { out.set_cost_per_request_usd(v); });
    set(economics.cost_per_correct_usd,
        [&](double v) { out.set_cost_per_correct_usd(v); });
    out.set_window_requests(economics.window_requests);
    set(economics.window_cost_per_correct_usd,
        [&](double v) { out.set_window_cost_per_correct_usd(v); });
  }
  return response;
}

absl::StatusOr<v1::GetRouteStatsResponse> AdminService::GetRouteStats(
    const v1::GetRouteStatsRequest& request) const {
  auto route = RouteFilter(parts_, request.route());
  if (!route.ok()) return route.status();
  const int only = *route;
  parts_.stats->Publish();
  std::shared_ptr<const policy::StatsSnapshot> snapshot =
      parts_.stats->Snapshot();
  v1::GetRouteStatsResponse response;
  const v1::Config& config = *parts_.config;
  for (int r = 0; r < config.routes_size(); ++r) {
    if (only >= 0 && r != only) continue;
    for (int t = 0; t < config.tasks_size(); ++t) {
      const policy::RouteTaskCounters& cell = snapshot->Cell(r, t);
      v1::RouteTaskStats* out = response.add_stats();
      out->set_route(config.routes(r).name());
      out->set_task(config.tasks(t));
      out->set_requests(cell.requests);
      out->set_errors(cell.errors);
      out->set_input_tokens(cell.input_tokens);
      out->set_output_tokens(cell.output_tokens);
      out->set_cost_usd(cell.cost_usd);
      out->set_latency_seconds_sum(cell.latency_seconds_sum);
      out->set_feedback_count(cell.feedback_count);
      out->set_feedback_score_sum(cell.feedback_score_sum);
      out->set_accuracy(cell.accuracy());
      out->set_cost_per_request_usd(cell.cost_per_request_usd());
      out->set_cost_per_correct_usd(cell.cost_per_correct_usd());
      out->set_latency_p50_seconds(cell.latency.Quantile(0.5));
      out->set_latency_p95_seconds(cell.latency.Quantile(0.95));
      out->set_latency_p99_seconds(cell.latency.Quantile(0.99));
      out->set_error_rate(cell.requests > 0
                              ? static_cast<double>(cell.errors) / cell.requests
                              : 0);
      out->set_recent_feedback(cell.recent.feedback);
      out->set_estimated_accuracy(
          parts_.engine->Posterior(r, t, *snapshot).mean());
    }
  }
  const absl::Time now = absl::Now();
  absl::flat_hash_set<std::string> shown;
  for (int r = 0; r < config.routes_size(); ++r) {
    if (only >= 0 && r != only) continue;
    const std::string& backend = config.routes(r).backend();
    if (!shown.insert(backend).second) continue;
    v1::BackendStatus* status = response.add_backends();
    status->set_name(backend);
    status->set_up(parts_.route_health[r]->up());
    status->set_health(parts_.route_health[r]->Describe(now));
  }
  return response;
}

absl::StatusOr<v1::ExperimentAnalysis> AdminService::GetExperiment(
    const v1::GetExperimentRequest& request) const {
  const v1::Config& config = *parts_.config;
  for (int e = 0; e < config.experiments_size(); ++e) {
    const v1::Experiment& spec = config.experiments(e);
    if (spec.name() != request.name()) continue;
    policy::ExperimentAnalysis analysis =
        policy::AnalyzeExperiment(spec, parts_.experiment_stats->Tallies(e));
    v1::ExperimentAnalysis out;
    out.set_name(analysis.name);
    out.set_control(analysis.control);
    out.set_srm_p_value(analysis.srm_p_value);
    out.set_srm_detected(analysis.srm_detected);
    out.set_verdict(analysis.verdict);
    for (const policy::ArmAnalysis& arm : analysis.arms) {
      v1::ArmAnalysis* wire = out.add_arms();
      wire->set_name(arm.name);
      wire->set_weight_share(arm.weight_share);
      wire->set_requests(arm.tally.requests);
      wire->set_errors(arm.tally.errors);
      wire->set_feedback(arm.tally.feedback);
      wire->set_accuracy(arm.accuracy);
      wire->set_accuracy_low(arm.accuracy_interval.low);
      wire->set_accuracy_high(arm.accuracy_interval.high);
      wire->set_cost_per_request_usd(arm.cost_per_request_usd);
      wire->set_cost_per_correct_usd(arm.cost_per_correct_usd);
      wire->set_latency_p50_seconds(arm.latency_p50_seconds);
      wire->set_latency_p95_seconds(arm.latency_p95_seconds);
      wire->set_error_rate(arm.error_rate);
      if (arm.versus_control.has_value()) {
        wire->set_compared(true);
        wire->set_difference(arm.versus_control->difference);
        wire->set_difference_low(arm.versus_control->confidence.low);
        wire->set_difference_high(arm.versus_control->confidence.high);
        wire->set_p_value(arm.versus_control->p_value);
        wire->set_significant(arm.versus_control->significant);
        wire->set_cost_difference_usd(arm.cost_difference_usd);
      }
      for (const std::string& breach : arm.guardrail_breaches) {
        wire->add_guardrail_breaches(breach);
      }
    }
    return out;
  }
  return absl::NotFoundError(
      absl::StrCat("name: no experiment ", QuoteInput(request.name())));
}

}  // namespace arbiter
