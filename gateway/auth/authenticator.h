#pragma once

// Who is calling, from the API key a call presents, and what they may do.
// One per config generation, so that a reload rotates keys:
//
//   Authenticator auth(config);  // a validated config, defaults applied
//   absl::StatusOr<Caller> caller = auth.Identify("Bearer ak_...", now);
//   // UNAUTHENTICATED: no key, not a Bearer key, unknown or expired.
//   RequireAdmin(*caller, "Admin.ReloadConfig");  // PERMISSION_DENIED for
//                                                 // a tenant's key
//   MaySearch(*caller, "hr");  // "tenant acme may not search collection hr"
//
// Route and task grants are enforced by the request pipeline (it reads
// Caller::tenant), once for every front.

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/auth/api_key.h"
#include "gateway/metrics.h"

namespace arbiter::auth {

// What one tenant's keys may use. Constant after construction.
struct TenantGrant {
  std::string name;
  std::vector<bool> routes;  // Per route of the config: allowed?
  std::vector<bool> tasks;   // Per task of the config.
  bool all_collections = true;
  absl::flat_hash_set<std::string> collections;  // When not all.

  // PERMISSION_DENIED "tenant acme may not use route fine-tuned".
  [[nodiscard]] absl::Status RouteDenied(absl::string_view route) const;
  [[nodiscard]] absl::Status TaskDenied(absl::string_view task) const;
};

enum class Role {
  kAnyone,  // auth is off (no section, or mode none): may do everything.
  kTenant,
  kAdmin,
};

struct Caller {
  Role role = Role::kAnyone;
  // The tenant of a kTenant caller; owned by the Authenticator.
  const TenantGrant* tenant = nullptr;
};

class Authenticator final {
 public:
  // Counts refusals in `metrics` unless it is null; it must outlive this.
  explicit Authenticator(const v1::Config& config, Metrics* metrics = nullptr);

  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // Whether calls must present a key (mode keys).
  [[nodiscard]] bool enabled() const { return enabled_; }

  // The caller presenting `authorization` (the header's value; nullopt when
  // the call has none) at `now`. With auth off, kAnyone whatever it holds.
  // Every configured key is compared, in constant time, whichever matches.
  [[nodiscard]] absl::StatusOr<Caller> Identify(
      std::optional<absl::string_view> authorization, absl::Time now) const;

 private:
  struct Key {
    KeyDigest digest;
    absl::Time expires = absl::InfiniteFuture();
    std::string label;
    int tenant = -1;  // Into tenants_; -1 for an admin key.
  };

  // UNAUTHENTICATED `message`, counted as `reason`.
  absl::Status Refuse(AuthFailure reason, absl::string_view message) const;

  bool enabled_ = false;
  Metrics* const metrics_;
  std::vector<TenantGrant> tenants_;
  std::vector<Key> keys_;
};

// OK for an admin or with auth off; PERMISSION_DENIED "admin key required
// for <what>" for a tenant.
[[nodiscard]] absl::Status RequireAdmin(const Caller& caller,
                                        absl::string_view what);
// OK unless a tenant's grant leaves `collection` out.
[[nodiscard]] absl::Status MaySearch(const Caller& caller,
                                     absl::string_view collection);
// The tenant a request id is issued for: the tenant's name, or "" for an
// admin or with auth off.
[[nodiscard]] absl::string_view TenantName(const Caller& caller);

}  // namespace arbiter::auth
