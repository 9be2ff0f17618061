#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace arbiter::cli {

inline constexpr char kDefaultTarget[] = "127.0.0.1:50051";

// The API key a client sends: the content of `file` (surrounding
// whitespace trimmed) when one is named, else $ARBITER_API_KEY, else ""
// (none). INVALID_ARGUMENT naming the file when it cannot be read or holds
// no key; the key itself is never printed.
[[nodiscard]] absl::StatusOr<std::string> ApiKeyOf(const std::string& file);

// How a client proves who it is and whom it talks to.
struct ClientCredentials {
  std::string api_key;  // Empty: none sent.
  // PEM. With a CA the channel is TLS, trusting only it; with a certificate
  // and key the client presents them (mutual TLS).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
};

// The API key as ApiKeyOf reads it, and TLS from the files that
// $ARBITER_TLS_CA_FILE, $ARBITER_TLS_CERT_FILE and $ARBITER_TLS_KEY_FILE
// name. INVALID_ARGUMENT naming the variable and file that cannot be read,
// or a certificate without its key.
[[nodiscard]] absl::StatusOr<ClientCredentials> CredentialsOf(
    const std::string& api_key_file);

// A channel to the gateway at `target` (loopback by default), in plain text
// or TLS as `credentials` say, that tells a gateway's answer from a failure
// to reach one: a call that never got there is reported with the address
// and `arbiter serve`. Every call carries `authorization: Bearer <api_key>`
// unless api_key is empty.
class GatewayChannel final {
 public:
  explicit GatewayChannel(std::string target,
                          const ClientCredentials& credentials = {});

  GatewayChannel(const GatewayChannel&) = delete;
  GatewayChannel& operator=(const GatewayChannel&) = delete;

  [[nodiscard]] const std::shared_ptr<grpc::Channel>& get() const {
    return channel_;
  }
  [[nodiscard]] const std::string& target() const { return target_; }

  // A failed call in words: "cannot reach a gateway at ADDR (...); `arbiter
  // serve` must be running there..." when the channel never connected, else
  // "CODE: message" as the gateway answered.
  [[nodiscard]] std::string Describe(const grpc::Status& status) const;
  // Prints Describe(status) as "arbiter: ..." and returns the exit code 1.
  int Fail(const grpc::Status& status) const;

  // Connects within `timeout`; UNAVAILABLE naming the address and `arbiter
  // serve` when nothing accepts the connection.
  [[nodiscard]] absl::Status WaitUntilConnected(absl::Duration timeout) const;

 private:
  std::string Unreachable(absl::string_view why) const;

  const std::string target_;
  const std::shared_ptr<grpc::Channel> channel_;
};

// "UNAVAILABLE", "INVALID_ARGUMENT", ...
[[nodiscard]] std::string StatusCodeName(grpc::StatusCode code);

// Print "arbiter: <why>" to stderr and return the exit code 1.
int Fail(absl::string_view message);
int Fail(const absl::Status& status);

}  // namespace arbiter::cli
