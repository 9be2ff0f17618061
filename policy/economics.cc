#include "policy/economics.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace arbiter::policy {

RequestCost& RequestCost::operator+=(const RequestCost& other) {
  input_usd += other.input_usd;
  output_usd += other.output_usd;
  request_usd += other.request_usd;
  retrieval_usd += other.retrieval_usd;
  embedding_usd += other.embedding_usd;
  return *this;
}

RequestCost PriceRequest(const v1::Pricing& pricing, int64_t input_tokens,
                         int64_t output_tokens, bool retrieved,
                         int64_t embedding_tokens) {
  constexpr double kPerMillion = 1e-6;
  RequestCost cost;
  cost.input_usd = pricing.input_usd_per_mtok() * input_tokens * kPerMillion;
  cost.output_usd = pricing.output_usd_per_mtok() * output_tokens * kPerMillion;
  cost.request_usd = pricing.request_usd();
  cost.retrieval_usd = retrieved ? pricing.retrieval_usd_per_query() : 0;
  cost.embedding_usd =
      retrieved ? pricing.embedding_usd_per_ktok() * embedding_tokens / 1000.0
                : 0;
  return cost;
}

namespace {

int64_t MinuteOf(absl::Time time) { return absl::ToUnixSeconds(time) / 60; }

std::optional<double> Ratio(double numerator, double denominator) {
  if (!(denominator > 0)) return std::nullopt;
  return numerator / denominator;
}

}  // namespace

EconomicsLedger::EconomicsLedger(const v1::Config& config, absl::Time start,
                                 std::vector<double> prior_cost_usd)
    : num_routes_(config.routes_size()),
      num_tasks_(std::max(1, config.tasks_size())),
      start_(start),
      window_(absl::Minutes(config.economics().window_minutes())),
      prior_cost_usd_(std::move(prior_cost_usd)) {
  const int window_minutes = static_cast<int>(absl::ToInt64Minutes(window_));
  for (const std::string& task : config.tasks()) task_names_.push_back(task);
  task_names_.resize(num_tasks_);
  for (const v1::Route& route : config.routes()) {
    route_names_.push_back(route.name());
    accrued_.push_back({0, 0, start});
    RouteTerms terms;
    terms.hosting_usd_per_hour = route.pricing().hosting_usd_per_hour();
    if (route.has_training()) {
      const v1::Training& training = route.training();
      terms.training_cost_usd = training.cost_usd();
      std::string error;
      // Validated with the config; a bad date amortises from the start.
      if (!absl::ParseTime("%Y-%m-%d", training.date(), &terms.trained,
                           &error)) {
        terms.trained = start;
      }
      terms.amortization = absl::Hours(24.0 * training.amortization_days());
      for (int b = 0; b < config.routes_size(); ++b) {
        if (config.routes(b).name() == training.baseline_route()) {
          terms.baseline = b;
        }
      }
    }
    terms_.push_back(terms);
  }
  cells_.resize(static_cast<size_t>(num_routes_) * num_tasks_);
  for (Cell& cell : cells_) cell.window.resize(window_minutes + 1);
}

EconomicsLedger::Bucket& EconomicsLedger::BucketFor(Cell& cell,
                                                    absl::Time now) {
  const int64_t minute = MinuteOf(now);
  Bucket& bucket = cell.window[minute % cell.window.size()];
  if (bucket.minute != minute) bucket = Bucket{minute};
  return bucket;
}

EconomicsLedger::Bucket EconomicsLedger::WindowSum(const Cell& cell,
                                                   absl::Time now) const {
  const int64_t newest = MinuteOf(now);
  const int64_t oldest = newest - absl::ToInt64Minutes(window_);
  Bucket sum;
  for (const Bucket& bucket : cell.window) {
    if (bucket.minute <= oldest || bucket.minute > newest) continue;
    sum.requests += bucket.requests;
    sum.cost_usd += bucket.cost_usd;
    sum.correct += bucket.correct;
  }
  return sum;
}

void EconomicsLedger::RecordRequest(int route, int task,
                                    const RequestCost& cost, absl::Time now) {
  Cell& cell = At(route, task);
  ++cell.requests;
  cell.cost += cost;
  Bucket& bucket = BucketFor(cell, now);
  ++bucket.requests;
  bucket.cost_usd += cost.total_usd();
}

void EconomicsLedger::RecordFeedback(int route, int task, double score,
                                     absl::Time now) {
  score = std::clamp(score, 0.0, 1.0);
  Cell& cell = At(route, task);
  ++cell.judged;
  cell.correct += score;
  BucketFor(cell, now).correct += score;
}

double EconomicsLedger::HostingUsd(int route, absl::Time now) const {
  const Accrual& accrued = accrued_[route];
  return accrued.hosting_usd +
         terms_[route].hosting_usd_per_hour *
             std::max(0.0, absl::ToDoubleHours(now - accrued.as_of));
}

double EconomicsLedger::TrainingBetween(int route, absl::Time from,
                                        absl::Time to) const {
  const RouteTerms& terms = terms_[route];
  if (terms.training_cost_usd <= 0) return 0;
  auto amortized = [&](absl::Time t) {
    const double share =
        absl::FDivDuration(t - terms.trained, terms.amortization);
    return terms.training_cost_usd * std::clamp(share, 0.0, 1.0);
  };
  return std::max(0.0, amortized(to) - amortized(from));
}

double EconomicsLedger::TrainingAmortizedUsd(int route, absl::Time now) const {
  const Accrual& accrued = accrued_[route];
  return accrued.training_usd + TrainingBetween(route, accrued.as_of, now);
}

v1::EconomicsState EconomicsLedger::ToState(absl::Time now) const {
  v1::EconomicsState state;
  state.set_start_unix_micros(absl::ToUnixMicros(start_));
  for (int r = 0; r < num_routes_; ++r) {
    v1::RouteAccrualState& accrual = *state.add_routes();
    accrual.set_route(route_names_[r]);
    accrual.set_hosting_usd(HostingUsd(r, now));
    accrual.set_training_usd(TrainingAmortizedUsd(r, now));
    accrual.set_as_of_unix_micros(absl::ToUnixMicros(now));
  }
  const int64_t oldest = MinuteOf(now) - absl::ToInt64Minutes(window_);
  for (int r = 0; r < num_routes_; ++r) {
    for (int t = 0; t < num_tasks_; ++t) {
      const Cell& cell = At(r, t);
      if (cell.requests == 0 && cell.judged == 0) continue;
      v1::EconomicsCellState& out = *state.add_cells();
      out.set_route(route_names_[r]);
      out.set_task(task_names_[t]);
      out.set_requests(cell.requests);
      out.set_input_usd(cell.cost.input_usd);
      out.set_output_usd(cell.cost.output_usd);
      out.set_request_usd(cell.cost.request_usd);
      out.set_retrieval_usd(cell.cost.retrieval_usd);
      out.set_embedding_usd(cell.cost.embedding_usd);
      out.set_judged(cell.judged);
      out.set_correct(cell.correct);
      for (const Bucket& bucket : cell.window) {
        if (bucket.minute <= oldest) continue;
        v1::EconomicsMinute& minute = *out.add_window();
        minute.set_minute(bucket.minute);
        minute.set_requests(bucket.requests);
        minute.set_cost_usd(bucket.cost_usd);
        minute.set_correct(bucket.correct);
      }
    }
  }
  return state;
}

void EconomicsLedger::Restore(const v1::EconomicsState& state, absl::Time now) {
  if (state.start_unix_micros() != 0) {
    start_ = std::min(now, absl::FromUnixMicros(state.start_unix_micros()));
  }
  auto index_of = [](const std::vector<std::string>& names,
                     const std::string& name) {
    auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? -1 : static_cast<int>(it - names.begin());
  };
  // A route new to this config accrues from now.
  for (Accrual& accrued : accrued_) accrued = {0, 0, now};
  for (const v1::RouteAccrualState& stored : state.routes()) {
    const int r = index_of(route_names_, stored.route());
    if (r < 0) continue;
    accrued_[r] = {
        stored.hosting_usd(), stored.training_usd(),
        std::min(now, absl::FromUnixMicros(stored.as_of_unix_micros()))};
  }
  const int64_t oldest = MinuteOf(now) - absl::ToInt64Minutes(window_);
  for (const v1::EconomicsCellState& stored : state.cells()) {
    const int r = index_of(route_names_, stored.route());
    const int t = index_of(task_names_, stored.task());
    if (r < 0 || t < 0) continue;
    Cell& cell = At(r, t);
    cell.requests = stored.requests();
    cell.cost = {stored.input_usd(), stored.output_usd(), stored.request_usd(),
                 stored.retrieval_usd(), stored.embedding_usd()};
    cell.judged = stored.judged();
    cell.correct = stored.correct();
    for (Bucket& bucket : cell.window) bucket = Bucket{};
    for (const v1::EconomicsMinute& minute : stored.window()) {
      if (minute.minute() <= oldest || minute.minute() > MinuteOf(now)) {
        continue;
      }
      cell.window[minute.minute() % cell.window.size()] = {
          minute.minute(), minute.requests(), minute.cost_usd(),
          minute.correct()};
    }
  }
}

EconomicsSnapshot EconomicsLedger::Snapshot(absl::Time now) const {
  EconomicsSnapshot snapshot;
  snapshot.as_of = now;
  snapshot.uptime = std::max(absl::ZeroDuration(), now - start_);
  snapshot.window = window_;
  const absl::Time window_start = std::max(start_, now - window_);
  // Rates are over the window, or the time since start when shorter (but
  // at least a minute, so the first requests do not read as a flood).
  const double window_days =
      absl::ToDoubleHours(std::max(absl::Minutes(1), now - window_start)) / 24;
  for (int r = 0; r < num_routes_; ++r) {
    RouteEconomics route;
    route.route = r;
    route.hosting_usd = HostingUsd(r, now);
    route.training_amortized_usd = TrainingAmortizedUsd(r, now);
    const double fixed = route.hosting_usd + route.training_amortized_usd;
    const double window_fixed = terms_[r].hosting_usd_per_hour *
                                    absl::ToDoubleHours(now - window_start) +
                                TrainingBetween(r, window_start, now);
    int64_t window_requests = 0;
    double window_cost = 0, window_correct = 0;
    std::vector<Bucket> sums(num_tasks_);
    for (int t = 0; t < num_tasks_; ++t) {
      const Cell& cell = At(r, t);
      route.requests += cell.requests;
      route.request_cost += cell.cost;
      route.judged += cell.judged;
      route.correct += cell.correct;
      sums[t] = WindowSum(cell, now);
      window_requests += sums[t].requests;
      window_cost += sums[t].cost_usd;
      window_correct += sums[t].correct;
    }
    for (int t = 0; t < num_tasks_; ++t) {
      const Cell& cell = At(r, t);
      TaskEconomics task;
      task.route = r;
      task.task = t;
      task.requests = cell.requests;
      task.request_cost = cell.cost;
      task.judged = cell.judged;
      task.correct = cell.correct;
      task.fixed_usd =
          route.requests > 0
              ? fixed * static_cast<double>(cell.requests) / route.requests
              : 0;
      task.accuracy = Ratio(cell.correct, static_cast<double>(cell.judged));
      task.cost_per_request_usd =
          Ratio(cell.cost.total_usd(), static_cast<double>(cell.requests));
      task.cost_per_correct_usd =
          Ratio(cell.cost.total_usd() + task.fixed_usd, cell.correct);
      task.window_requests = sums[t].requests;
      task.window_correct = sums[t].correct;
      task.window_cost_usd =
          sums[t].cost_usd +
          (window_requests > 0
               ? window_fixed * static_cast<double>(sums[t].requests) /
                     window_requests
               : 0);
      task.window_cost_per_correct_usd =
          Ratio(task.window_cost_usd, sums[t].correct);
      snapshot.tasks.push_back(task);
    }
    route.accuracy = Ratio(route.correct, static_cast<double>(route.judged));
    route.cost_per_request_usd =
        Ratio(route.total_usd(), static_cast<double>(route.requests));
    route.cost_per_correct_usd = Ratio(route.total_usd(), route.correct);
    route.window_cost_per_correct_usd =
        Ratio(window_cost + window_fixed, window_correct);
    route.requests_per_day = window_requests / window_days;
    snapshot.routes.push_back(std::move(route));
  }
  for (int r = 0; r < num_routes_; ++r) {
    if (terms_[r].baseline >= 0) {
      snapshot.routes[r].breakeven = ComputeBreakEven(r, snapshot);
    }
  }
  return snapshot;
}

BreakEven EconomicsLedger::ComputeBreakEven(
    int r, const EconomicsSnapshot& snapshot) const {
  const RouteTerms& terms = terms_[r];
  const int b = terms.baseline;
  const RouteEconomics& tuned = snapshot.routes[r];
  const RouteEconomics& base = snapshot.routes[b];
  BreakEven be;
  be.baseline = b;
  be.training_cost_usd = terms.training_cost_usd;
  // What the baseline would have cost on the tuned route's own traffic:
  // its mean on each task, else its overall mean, else its prior.
  const double base_overall =
      base.requests > 0
          ? base.request_cost.total_usd() / base.requests
          : (b < static_cast<int>(prior_cost_usd_.size()) ? prior_cost_usd_[b]
                                                          : 0);
  double gross = 0, baseline_cost = 0;
  for (int t = 0; t < num_tasks_; ++t) {
    const Cell& cell = At(r, t);
    if (cell.requests == 0) continue;
    const Cell& base_cell = At(b, t);
    const double base_mean =
        base_cell.requests > 0 ? base_cell.cost.total_usd() / base_cell.requests
                               : base_overall;
    baseline_cost += cell.requests * base_mean;
    gross += cell.requests * base_mean - cell.cost.total_usd();
  }
  if (tuned.requests > 0) {
    be.savings_per_request_usd = gross / tuned.requests;
    be.baseline_cost_per_request_usd = baseline_cost / tuned.requests;
  }
  be.savings_usd = gross - tuned.hosting_usd;
  be.remaining_usd = std::max(0.0, be.training_cost_usd - be.savings_usd);
  be.recovered_share =
      be.training_cost_usd > 0
          ? std::clamp(be.savings_usd / be.training_cost_usd, 0.0, 1.0)
          : 1.0;
  be.recovered = be.remaining_usd <= 0;
  const double per_request = be.savings_per_request_usd.value_or(0);
  const double hosting_per_day = terms.hosting_usd_per_hour * 24;
  const double net_per_day =
      tuned.requests_per_day * per_request - hosting_per_day;
  if (be.recovered) {
    be.requests_remaining = 0;
    be.days_remaining = 0;
  } else if (tuned.requests_per_day <= 0) {
    be.never = true;
    be.never_reason = "no requests in the recent window";
  } else if (per_request <= 0) {
    be.never = true;
    be.never_reason = absl::StrFormat(
        "it costs $%.6f more per request than its baseline", -per_request);
  } else if (net_per_day <= 0) {
    be.never = true;
    be.never_reason = absl::StrFormat(
        "hosting ($%.2f/day) exceeds its savings at today's rate "
        "($%.2f/day)",
        hosting_per_day, tuned.requests_per_day * per_request);
  } else {
    be.days_remaining = be.remaining_usd / net_per_day;
    be.requests_remaining =
        std::ceil(*be.days_remaining * tuned.requests_per_day);
  }
  be.cost_per_correct_usd = tuned.cost_per_correct_usd;
  be.baseline_cost_per_correct_usd = base.cost_per_correct_usd;
  const bool cheaper = per_request > 0;
  if (!be.savings_per_request_usd.has_value()) {
    be.verdict = "no traffic yet";
  } else if (be.cost_per_correct_usd && be.baseline_cost_per_correct_usd) {
    const bool cheaper_correct =
        *be.cost_per_correct_usd < *be.baseline_cost_per_correct_usd;
    be.verdict =
        cheaper && cheaper_correct
            ? "cheaper per request and per correct answer"
        : cheaper ? "cheaper per request but dearer per correct answer: it "
                    "is less accurate than it is cheap"
        : cheaper_correct ? "dearer per request but cheaper per correct "
                            "answer: its accuracy pays for it"
                          : "dearer per request and per correct answer";
  } else {
    be.verdict = absl::StrCat(
        cheaper ? "cheaper" : "dearer",
        " per request; too little feedback yet to compare cost per correct "
        "answer");
  }
  return be;
}

}  // namespace arbiter::policy
