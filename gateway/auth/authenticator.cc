#include "gateway/auth/authenticator.h"

#include <openssl/crypto.h>

#include "absl/strings/str_cat.h"

namespace arbiter::auth {
namespace {

// Per name of `all`: whether `allowed` names it; all true when it is empty.
std::vector<bool> Allowed(
    const google::protobuf::RepeatedPtrField<std::string>& allowed,
    const std::vector<std::string>& all) {
  std::vector<bool> mask(all.size(), allowed.empty());
  for (const std::string& name : allowed) {
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i] == name) mask[i] = true;
    }
  }
  return mask;
}

}  // namespace

absl::Status TenantGrant::RouteDenied(absl::string_view route) const {
  return absl::PermissionDeniedError(
      absl::StrCat("tenant ", name, " may not use route ", route));
}

absl::Status TenantGrant::TaskDenied(absl::string_view task) const {
  return absl::PermissionDeniedError(
      absl::StrCat("tenant ", name, " may not use task ", task));
}

Authenticator::Authenticator(const v1::Config& config, Metrics* metrics)
    : enabled_(config.has_auth() && config.auth().mode() != v1::AUTH_MODE_NONE),
      metrics_(metrics) {
  if (!enabled_) return;
  std::vector<std::string> routes;
  for (const v1::Route& route : config.routes()) routes.push_back(route.name());
  const std::vector<std::string> tasks(config.tasks().begin(),
                                       config.tasks().end());
  auto add_key = [this](const v1::ApiKey& key, int tenant) {
    Key entry;
    // Validated: a bad hash never gets here; a failed parse leaves the zero
    // digest, which no key hashes to.
    entry.digest.fill(0);
    if (!ParseSha256Hex(key.sha256(), &entry.digest)) return;
    // Fails closed: an expiry that does not parse has passed.
    if (!key.expires().empty() && !ParseExpiry(key.expires(), &entry.expires)) {
      entry.expires = absl::InfinitePast();
    }
    entry.label = key.label();
    entry.tenant = tenant;
    keys_.push_back(std::move(entry));
  };
  const v1::Auth& auth = config.auth();
  for (int t = 0; t < auth.tenants_size(); ++t) {
    const v1::Tenant& tenant = auth.tenants(t);
    TenantGrant grant;
    grant.name = tenant.name();
    grant.routes = Allowed(tenant.allowed_routes(), routes);
    grant.tasks = Allowed(tenant.allowed_tasks(), tasks);
    grant.all_collections = tenant.allowed_collections().empty();
    grant.collections.insert(tenant.allowed_collections().begin(),
                             tenant.allowed_collections().end());
    tenants_.push_back(std::move(grant));
    for (const v1::ApiKey& key : tenant.keys()) add_key(key, t);
  }
  for (const v1::ApiKey& key : auth.admin_keys()) add_key(key, -1);
}

absl::StatusOr<Caller> Authenticator::Identify(
    std::optional<absl::string_view> authorization, absl::Time now) const {
  if (!enabled_) return Caller{};
  if (!authorization.has_value()) {
    return Refuse(
        AuthFailure::kMissing,
        "an API key is required: send authorization: Bearer <API key>");
  }
  absl::StatusOr<absl::string_view> key = BearerToken(*authorization);
  if (!key.ok()) return Refuse(AuthFailure::kMalformed, key.status().message());
  const KeyDigest presented = Sha256(*key);
  // No early exit: how long this takes says nothing of which key matched.
  int match = -1;
  for (size_t k = 0; k < keys_.size(); ++k) {
    const bool equal = CRYPTO_memcmp(presented.data(), keys_[k].digest.data(),
                                     presented.size()) == 0;
    if (equal && match < 0) match = static_cast<int>(k);
  }
  if (match < 0) return Refuse(AuthFailure::kUnknown, "unknown API key");
  const Key& found = keys_[match];
  const std::string whose =
      found.tenant < 0
          ? std::string("an admin key")
          : absl::StrCat("a key of tenant ", tenants_[found.tenant].name);
  if (now >= found.expires) {
    return Refuse(
        AuthFailure::kExpired,
        absl::StrCat(
            "the API key (", whose,
            found.label.empty() ? "" : absl::StrCat(", label ", found.label),
            ") expired at ",
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", found.expires,
                             absl::UTCTimeZone())));
  }
  if (found.tenant < 0) return Caller{Role::kAdmin, nullptr};
  return Caller{Role::kTenant, &tenants_[found.tenant]};
}

absl::Status Authenticator::Refuse(AuthFailure reason,
                                   absl::string_view message) const {
  if (metrics_ != nullptr) metrics_->RecordAuthFailure(reason);
  return absl::UnauthenticatedError(message);
}

absl::Status RequireAdmin(const Caller& caller, absl::string_view what) {
  if (caller.role != Role::kTenant) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("admin key required for ", what, " (tenant ",
                   caller.tenant->name, "'s key may not)"));
}

absl::Status MaySearch(const Caller& caller, absl::string_view collection) {
  if (caller.role != Role::kTenant || caller.tenant->all_collections ||
      caller.tenant->collections.contains(collection)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat("tenant ", caller.tenant->name,
                   " may not search collection ", collection));
}

absl::string_view TenantName(const Caller& caller) {
  return caller.role == Role::kTenant ? absl::string_view(caller.tenant->name)
                                      : absl::string_view();
}

}  // namespace arbiter::auth
