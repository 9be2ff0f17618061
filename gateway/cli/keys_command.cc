// arbiter keys create: a new API key, printed once with its config line.

#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gateway/auth/api_key.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"
#include "nlohmann/json.hpp"

namespace arbiter::cli {
namespace {

// As the config requires of tenant names.
bool IsName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

}  // namespace

CLI::App* AddKeysCreateCommand(CLI::App& arbiter, KeysCreateFlags& flags) {
  CLI::App* keys =
      arbiter.add_subcommand("keys", "API keys for the config's auth section.");
  keys->require_subcommand(1);
  keys->footer(
      "Example:\n  arbiter keys create --tenant acme --label laptop\n`arbiter "
      "keys COMMAND --help` shows a command's flags.");
  CLI::App* create = AddCommand(
      *keys, "create",
      "Make a new API key for a tenant (or an admin) and print it once,\nwith "
      "the line holding its SHA-256 to add to the config's auth section.\nThe "
      "gateway never stores the key itself; keep it secret.",
      "arbiter keys create --tenant acme --label laptop --expires-in 90d");
  create->add_option("--tenant", flags.tenant, "the tenant the key is for")
      ->type_name("NAME");
  create->add_flag("--admin", flags.admin,
                   "an admin key (Admin, Retrieval writes, reload)");
  create->add_option("--label", flags.label, "names the key in messages")
      ->type_name("TEXT");
  create
      ->add_option("--expires-in", flags.expires_in,
                   "when it stops working, e.g. 90d or 12h (default: never)")
      ->type_name("DURATION");
  return create;
}

int RunKeysCreate(const KeysCreateFlags& flags) {
  if (flags.admin == !flags.tenant.empty()) {
    return UsageError("keys create", "give --tenant NAME or --admin");
  }
  if (!flags.admin && !IsName(flags.tenant)) {
    return UsageError("keys create",
                      "--tenant: must be 1-64 characters of letters, digits, "
                      "'_', '-' or '.'");
  }
  std::string expires;
  if (!flags.expires_in.empty()) {
    absl::Duration lifetime;
    if (!auth::ParseLifetime(flags.expires_in, &lifetime)) {
      return UsageError("keys create",
                        absl::StrCat("--expires-in: not a duration such as "
                                     "90d, 12h or 30m: \"",
                                     flags.expires_in, "\""));
    }
    expires = absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now() + lifetime,
                               absl::UTCTimeZone());
  }
  auto key = auth::NewApiKey();
  if (!key.ok()) return Fail(key.status());
  std::string line = absl::StrCat("{sha256: ", auth::Sha256Hex(*key));
  if (!flags.label.empty()) {
    // JSON strings are YAML flow scalars, whatever the label holds.
    absl::StrAppend(&line, ", label: ", nlohmann::json(flags.label).dump());
  }
  if (!expires.empty()) absl::StrAppend(&line, ", expires: ", expires);
  absl::StrAppend(&line, "}");
  const std::string whose =
      flags.admin ? std::string("an admin key")
                  : absl::StrCat("a key of tenant ", flags.tenant);
  std::cout << "API key, " << whose
            << " (shown only now; the gateway keeps its SHA-256 only):\n"
            << *key << "\n\n"
            << (flags.admin ? std::string("Add it under auth.admin_keys:")
                            : absl::StrCat("Add it under the keys of tenant ",
                                           flags.tenant, " in auth.tenants:"))
            << "\n  - " << line << "\n"
            << "Clients send it as `authorization: Bearer <key>`; the arbiter "
               "CLI reads it from $ARBITER_API_KEY or --api-key-file.\n";
  return 0;
}

}  // namespace arbiter::cli
