// Retrieval.Upsert may not create collections without bound: each open one
// keeps an index and a maintenance thread.

#include <future>
#include <memory>
#include <string>

#include "gateway/config.h"
#include "gateway/gateway_host.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace arbiter {
namespace {

using ::testing::HasSubstr;

absl::Status Upsert(GatewayHost& gateway, const std::string& collection) {
  v1::UpsertRequest request;
  request.set_collection(collection);
  v1::RetrievalDocument* document = request.add_documents();
  document->set_id("doc");
  document->set_text("A short document about refunds.");
  v1::UpsertResponse response;
  std::promise<absl::Status> done;
  gateway.foundation().retrieval().Upsert(
      request, &response, [&](absl::Status status) { done.set_value(status); });
  return done.get_future().get();
}

TEST(CollectionLimitTest, UpsertCreatesNoCollectionBeyondTheLimit) {
  auto loaded = LoadEmbeddedConfig();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  loaded->config.mutable_state()->clear_path();  // In memory: no files.
  // The quickstart's corpus is one collection already.
  loaded->config.mutable_retrieval()->set_max_collections(3);
  prometheus::Registry registry;
  auto gateway = GatewayHost::Create(*std::move(loaded), registry, nullptr);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  EXPECT_TRUE(Upsert(**gateway, "kb-1").ok());
  EXPECT_TRUE(Upsert(**gateway, "kb-2").ok());
  const absl::Status refused = Upsert(**gateway, "kb-3");
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("retrieval.max_collections"));
  // Collections that exist still take writes.
  EXPECT_TRUE(Upsert(**gateway, "kb-1").ok());
}

TEST(CollectionLimitTest, LimitIsDefaultedAndBounded) {
  auto loaded = LoadEmbeddedConfig();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.retrieval().max_collections(), 64);
  v1::Config config = loaded->config;
  config.mutable_retrieval()->set_max_collections(0);
  EXPECT_THAT(
      ValidateConfig(config),
      ::testing::Contains("retrieval.max_collections: must be in [1, 10000]"));
}

}  // namespace
}  // namespace arbiter
