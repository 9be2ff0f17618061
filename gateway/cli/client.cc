#include "gateway/cli/client.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace arbiter::cli {

namespace {

// Adds the authorization metadata to every call of a channel.
class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* value) : value_(value) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;  // The factory's, which outlives calls.
};

class BearerFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerFactory(const std::string& api_key)
      : value_(absl::StrCat("Bearer ", api_key)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(&value_);
  }

 private:
  const std::string value_;
};

std::shared_ptr<grpc::Channel> MakeChannel(
    const std::string& target, const ClientCredentials& credentials) {
  std::shared_ptr<grpc::ChannelCredentials> transport =
      grpc::InsecureChannelCredentials();
  if (!credentials.tls_ca.empty()) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = credentials.tls_ca;
    tls.pem_cert_chain = credentials.tls_cert;
    tls.pem_private_key = credentials.tls_key;
    transport = grpc::SslCredentials(tls);
  }
  if (credentials.api_key.empty()) {
    return grpc::CreateChannel(target, transport);
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<BearerFactory>(credentials.api_key));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, transport, grpc::ChannelArguments(), std::move(interceptors));
}

// The file $variable names, "" when it is unset or empty.
absl::StatusOr<std::string> FileOfVariable(const char* variable) {
  const char* path = std::getenv(variable);
  if (path == nullptr || *path == '\0') return std::string();
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  if (!in.is_open() || !(content << in.rdbuf())) {
    return absl::InvalidArgumentError(
        absl::StrCat("$", variable, ": cannot read ", path));
  }
  return content.str();
}

}  // namespace

absl::StatusOr<std::string> ApiKeyOf(const std::string& file) {
  if (file.empty()) {
    const char* from_env = std::getenv("ARBITER_API_KEY");
    return std::string(
        from_env == nullptr ? "" : absl::StripAsciiWhitespace(from_env));
  }
  std::ifstream in(file, std::ios::binary);
  std::stringstream content;
  if (!in.is_open()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file: cannot read ", file));
  }
  content << in.rdbuf();  // Fails only for an empty file, which is told next.
  std::string key(absl::StripAsciiWhitespace(content.str()));
  if (key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file: ", file, " holds no key"));
  }
  return key;
}

absl::StatusOr<ClientCredentials> CredentialsOf(
    const std::string& api_key_file) {
  ClientCredentials credentials;
  auto key = ApiKeyOf(api_key_file);
  if (!key.ok()) return key.status();
  credentials.api_key = *std::move(key);
  std::string* files[] = {&credentials.tls_ca, &credentials.tls_cert,
                          &credentials.tls_key};
  const char* variables[] = {"ARBITER_TLS_CA_FILE", "ARBITER_TLS_CERT_FILE",
                             "ARBITER_TLS_KEY_FILE"};
  for (int i = 0; i < 3; ++i) {
    auto content = FileOfVariable(variables[i]);
    if (!content.ok()) return content.status();
    *files[i] = *std::move(content);
  }
  if (credentials.tls_cert.empty() != credentials.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "$ARBITER_TLS_CERT_FILE and $ARBITER_TLS_KEY_FILE go together: a "
        "client certificate needs its key");
  }
  if (!credentials.tls_cert.empty() && credentials.tls_ca.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs TLS: set $ARBITER_TLS_CA_FILE to the CA "
        "of the gateway's certificate");
  }
  return credentials;
}

GatewayChannel::GatewayChannel(std::string target,
                               const ClientCredentials& credentials)
    : target_(std::move(target)), channel_(MakeChannel(target_, credentials)) {}

std::string GatewayChannel::Unreachable(absl::string_view why) const {
  return absl::StrCat("cannot reach a gateway at ", target_, " (", why,
                      "); `arbiter serve` must be running there, or point "
                      "--target at one");
}

std::string GatewayChannel::Describe(const grpc::Status& status) const {
  std::string answer = absl::StrCat(StatusCodeName(status.error_code()), ": ",
                                    status.error_message());
  // A gateway's own UNAVAILABLE (a backend down) comes over a ready channel;
  // a refused or unresolvable address leaves it unconnected.
  const bool never_connected =
      (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
       status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) &&
      channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY;
  if (never_connected) return Unreachable(answer);
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    absl::StrAppend(&answer,
                    " (the gateway wants an API key: --api-key-file PATH or "
                    "$ARBITER_API_KEY)");
  }
  return answer;
}

int GatewayChannel::Fail(const grpc::Status& status) const {
  return cli::Fail(Describe(status));
}

absl::Status GatewayChannel::WaitUntilConnected(absl::Duration timeout) const {
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      return absl::UnavailableError(Unreachable("the connection failed"));
    }
    if (!channel_->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(Unreachable(absl::StrCat(
          "no connection within ", absl::FormatDuration(timeout))));
    }
    state = channel_->GetState(/*try_to_connect=*/true);
  }
  return absl::OkStatus();
}

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC and absl share code numbers.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int Fail(absl::string_view message) {
  std::cerr << "arbiter: " << message << "\n";
  return 1;
}

int Fail(const absl::Status& status) { return Fail(status.message()); }

}  // namespace arbiter::cli
