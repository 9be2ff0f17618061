// arbiter reload: Admin/ReloadConfig, as SIGHUP does.

#include <chrono>
#include <iostream>

#include "CLI/CLI.hpp"
#include "arbiter/v1/gateway.grpc.pb.h"
#include "gateway/cli/client.h"
#include "gateway/cli/commands.h"
#include "gateway/cli/flags.h"

namespace arbiter::cli {

CLI::App* AddReloadCommand(CLI::App& arbiter, ReloadFlags& flags) {
  CLI::App* reload = AddCommand(
      arbiter, "reload",
      "Make a running gateway read its config file again.\nThe new config "
      "is validated whole and swapped in; requests in flight finish\non the "
      "old one, statistics carry over by name (Admin/ReloadConfig, as "
      "SIGHUP).",
      "arbiter reload --target 127.0.0.1:50051");
  AddTarget(*reload, flags.target, flags.api_key_file);
  return reload;
}

int RunReload(const ReloadFlags& flags) {
  auto credentials = CredentialsOf(flags.api_key_file);
  if (!credentials.ok()) return Fail(credentials.status());
  GatewayChannel channel(flags.target, *credentials);
  auto stub = v1::Admin::NewStub(channel.get());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  v1::ReloadConfigResponse response;
  grpc::Status status =
      stub->ReloadConfig(&context, v1::ReloadConfigRequest(), &response);
  if (!status.ok()) return channel.Fail(status);
  std::cout << "reloaded: config hash " << response.config_hash() << "\n";
  for (const std::string& change : response.changes()) {
    std::cout << "  " << change << "\n";
  }
  return 0;
}

}  // namespace arbiter::cli
