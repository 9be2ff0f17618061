#include "gateway/gateway_host.h"

#include <openssl/sha.h>

#include <iostream>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gateway/auth/exposure.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"

namespace arbiter {
namespace {

// A retired generation nothing holds is ended this long after: a thread
// that just dropped it may still be returning through its code.
constexpr absl::Duration kReapGrace = absl::Seconds(1);
constexpr absl::Duration kReapEvery = absl::Milliseconds(250);

// The first 12 hex digits of the SHA-256 of the config's deterministic
// encoding, defaults applied: equal configs, equal hashes.
std::string HashOf(const v1::Config& config) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    config.SerializeToCodedStream(&coded);
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), 6));
}

// "server: max_in_flight: 4096 -> 100" for each setting of the sections
// built once at start that the new config changes.
std::vector<std::string> RestartOnlyChanges(const v1::Config& running,
                                            const v1::Config& next) {
  std::vector<std::string> changes;
  auto compare = [&](const char* section,
                     const google::protobuf::Message& before,
                     const google::protobuf::Message& after) {
    std::string report;
    {
      google::protobuf::util::MessageDifferencer differ;
      google::protobuf::io::StringOutputStream stream(&report);
      google::protobuf::util::MessageDifferencer::StreamReporter reporter(
          &stream);
      differ.ReportDifferencesTo(&reporter);
      differ.Compare(before, after);
    }
    for (absl::string_view line : absl::StrSplit(report, '\n')) {
      if (line.empty()) continue;
      absl::ConsumePrefix(&line, "modified: ");
      absl::ConsumePrefix(&line, "added: ");
      absl::ConsumePrefix(&line, "deleted: ");
      changes.push_back(absl::StrCat(section, ".", line));
    }
  };
  compare("server", running.server(), next.server());
  compare("retrieval", running.retrieval(), next.retrieval());
  compare("state", running.state(), next.state());
  return changes;
}

// Routes added and removed, backends kept and made: what a reload changed.
std::vector<std::string> Changes(const Gateway& before, const Gateway& after) {
  std::vector<std::string> lines;
  std::vector<std::string> added, removed, kept, made;
  for (const v1::Route& route : after.config().routes()) {
    if (!before.parts().route_index.contains(route.name())) {
      added.push_back(route.name());
    }
  }
  for (const v1::Route& route : before.config().routes()) {
    if (!after.parts().route_index.contains(route.name())) {
      removed.push_back(route.name());
    }
  }
  for (const v1::Backend& backend : after.config().backends()) {
    auto it = before.backends().find(backend.name());
    const bool same = it != before.backends().end() &&
                      it->second == after.backends().at(backend.name());
    (same ? kept : made).push_back(backend.name());
  }
  auto line = [&](const char* what, const std::vector<std::string>& names) {
    if (!names.empty()) {
      lines.push_back(absl::StrCat(what, ": ", absl::StrJoin(names, ", ")));
    }
  };
  line("routes added", added);
  line("routes removed", removed);
  line("backends kept (connections and health)", kept);
  line("backends made new", made);
  // Keys by hash only: that a rotation took effect, never which key.
  auto key_hashes = [](const v1::Config& config) {
    std::set<std::string> hashes;
    for (const v1::Tenant& tenant : config.auth().tenants()) {
      for (const v1::ApiKey& key : tenant.keys()) {
        hashes.insert(absl::AsciiStrToLower(key.sha256()));
      }
    }
    for (const v1::ApiKey& key : config.auth().admin_keys()) {
      hashes.insert(absl::AsciiStrToLower(key.sha256()));
    }
    return hashes;
  };
  const std::set<std::string> keys_before = key_hashes(before.config());
  const std::set<std::string> keys_after = key_hashes(after.config());
  int keys_added = 0;
  for (const std::string& hash : keys_after) {
    keys_added += keys_before.contains(hash) ? 0 : 1;
  }
  const int keys_removed = static_cast<int>(keys_before.size()) -
                           (static_cast<int>(keys_after.size()) - keys_added);
  if (keys_added > 0 || keys_removed > 0) {
    lines.push_back(absl::StrCat("API keys: ", keys_added, " added, ",
                                 keys_removed, " removed"));
  }
  return lines;
}

}  // namespace

GatewayHost::GatewayHost(prometheus::Registry& registry, ConfigSource source)
    : registry_(registry),
      source_(std::move(source)),
      reloads_(prometheus::BuildCounter()
                   .Name("arbiter_config_reloads_total")
                   .Help("Config reloads (SIGHUP, Admin/ReloadConfig), by "
                         "outcome: applied, or refused (invalid, or a change "
                         "that needs a restart).")
                   .Register(registry)),
      config_info_(prometheus::BuildGauge()
                       .Name("arbiter_config_info")
                       .Help("Always 1; the hash label names the config being "
                             "served (the first 12 hex digits of its SHA-256).")
                       .Register(registry)) {
  reloads_.Add({{"outcome", "applied"}});
  reloads_.Add({{"outcome", "refused"}});
}

absl::StatusOr<std::unique_ptr<GatewayHost>> GatewayHost::Create(
    LoadedConfig config, prometheus::Registry& registry, ConfigSource source) {
  auto host = std::unique_ptr<GatewayHost>(
      new GatewayHost(registry, std::move(source)));
  auto foundation = GatewayFoundation::Create(config, registry);
  if (!foundation.ok()) return foundation.status();
  host->foundation_ = *std::move(foundation);
  const std::string hash = HashOf(config.config);
  auto gateway = Gateway::Create(std::move(config), *host->foundation_,
                                 registry, host->handover_);
  if (!gateway.ok()) return gateway.status();
  for (const std::string& line : (*gateway)->RestoreStored()) {
    std::cerr << "state: " << line << std::endl;
  }
  {
    std::lock_guard lock(host->current_mu_);
    host->current_ = std::shared_ptr<Gateway>(*std::move(gateway));
    host->hash_ = hash;
  }
  host->SetConfigInfo(hash);
  GatewayHost* raw = host.get();
  host->foundation_->StartStateWriter([raw] {
    std::shared_lock hold(raw->handover_);
    return raw->Current()->state_sync().Collect();
  });
  host->reaper_ = std::make_unique<TimerQueue>();
  return host;
}

GatewayHost::~GatewayHost() {
  stopping_ = true;
  reaper_.reset();
  // The last batch is written while the generation it reads is here.
  if (foundation_ != nullptr) foundation_->CloseState();
  {
    std::lock_guard lock(retired_mu_);
    retired_.clear();
  }
  {
    std::lock_guard lock(current_mu_);
    current_.reset();
  }
  foundation_.reset();
}

std::shared_ptr<Gateway> GatewayHost::Current() const {
  std::lock_guard lock(current_mu_);
  return current_;
}

std::string GatewayHost::config_hash() const {
  std::lock_guard lock(current_mu_);
  return hash_;
}

std::string GatewayHost::Describe() const {
  return absl::StrCat(Current()->Describe(), "config hash: ", config_hash(),
                      " (SIGHUP or Admin/ReloadConfig reloads it)\n");
}

void GatewayHost::SetConfigInfo(const std::string& hash) {
  if (config_info_now_ != nullptr) config_info_.Remove(config_info_now_);
  config_info_now_ = &config_info_.Add({{"hash", hash}});
  config_info_now_->Set(1);
}

absl::StatusOr<GatewayHost::ReloadReport> GatewayHost::Reload() {
  std::lock_guard one_at_a_time(reload_mu_);
  auto refuse = [this](absl::Status status) {
    reloads_.Add({{"outcome", "refused"}}).Increment();
    std::cerr << "reload refused; the running config stays: "
              << status.message() << std::endl;
    return status;
  };
  if (source_ == nullptr) {
    return refuse(absl::FailedPreconditionError(
        "this gateway was not started from a config it can read again"));
  }
  auto loaded = source_();
  if (!loaded.ok()) return refuse(loaded.status());
  std::shared_ptr<Gateway> running = Current();
  std::vector<std::string> restart_only =
      RestartOnlyChanges(running->config(), loaded->config);
  if (!restart_only.empty()) {
    return refuse(absl::FailedPreconditionError(
        absl::StrCat("these settings only change with a restart: ",
                     absl::StrJoin(restart_only, "; "))));
  }
  // Its listeners stay, so dropping auth would open them to anyone.
  if (absl::Status exposed = auth::CheckExposure(loaded->config);
      !exposed.ok()) {
    return refuse(exposed);
  }
  if (const std::string warning = auth::OpenAccessWarning(loaded->config);
      !warning.empty()) {
    std::cerr << warning << std::endl;
  }
  const std::string hash = HashOf(loaded->config);
  auto made =
      Gateway::Create(*std::move(loaded), *foundation_, registry_, handover_);
  if (!made.ok()) return refuse(made.status());
  std::shared_ptr<Gateway> next(*std::move(made));
  for (auto& step : reload_steps_) {
    if (absl::Status done = step(); !done.ok()) return refuse(done);
  }
  ReloadReport report;
  report.config_hash = hash;
  {
    // No outcome or feedback is counted while the statistics change hands.
    std::unique_lock handing_over(handover_);
    report.changes = next->TakeOver(*running);
    running->Retire(next);
    std::lock_guard lock(current_mu_);
    current_ = next;
    hash_ = hash;
  }
  for (std::string& line : Changes(*running, *next)) {
    report.changes.push_back(std::move(line));
  }
  bool reaping;
  {
    std::lock_guard lock(retired_mu_);
    retired_.push_back({std::move(running)});
    reaping = std::exchange(reaping_, true);
  }
  SetConfigInfo(hash);
  reloads_.Add({{"outcome", "applied"}}).Increment();
  std::cerr << "reloaded the config (hash " << hash
            << "): " << absl::StrJoin(report.changes, "; ") << std::endl;
  if (!reaping) ScheduleReap();  // One check at a time for all of them.
  return report;
}

void GatewayHost::AddReloadStep(absl::AnyInvocable<absl::Status()> step) {
  std::lock_guard lock(reload_mu_);
  reload_steps_.push_back(std::move(step));
}

void GatewayHost::ScheduleReap() {
  reaper_->RunAfter(kReapEvery, [this] {
    if (stopping_) return;
    std::vector<std::shared_ptr<Gateway>> ended;
    bool more = false;
    {
      std::lock_guard lock(retired_mu_);
      const absl::Time now = absl::Now();
      std::erase_if(retired_, [&](Retired& retired) {
        // Only this list hands it out, so once alone it stays alone.
        if (retired.gateway.use_count() > 1) return false;
        if (retired.idle_since == absl::InfiniteFuture()) {
          retired.idle_since = now;
        }
        if (now - retired.idle_since < kReapGrace) return false;
        ended.push_back(std::move(retired.gateway));
        return true;
      });
      more = !retired_.empty();
      reaping_ = more;
    }
    ended.clear();  // Outside the lock: ending one stops its ticker.
    if (more) ScheduleReap();
  });
}

}  // namespace arbiter
