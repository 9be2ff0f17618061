// sim-server over real HTTP on loopback: malformed requests get 400 with a
// message naming the field, and the server lives on.

#include "gateway/sim/sim_server.h"

#include <httplib.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::sim {
namespace {

using ::testing::HasSubstr;

constexpr char kQuestions[] = R"(
{"id": "q1", "task": "faq", "question": "How do I reset my password?", "answer": "Settings > Security"}
)";

class SimServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v1::SimBackend config;
    config.set_output_tokens(8);
    auto questions = ParseQuestionSet(kQuestions);
    ASSERT_TRUE(questions.ok()) << questions.status();
    auto simulator = Simulator::Create(config, *std::move(questions));
    ASSERT_TRUE(simulator.ok()) << simulator.status();
    auto server = SimServer::Start(std::move(*simulator), "127.0.0.1", 0, 8);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  httplib::Result Post(const std::string& path, const std::string& body) {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_read_timeout(10);
    return client.Post(path.c_str(), body, "application/json");
  }

  std::unique_ptr<SimServer> server_;
};

TEST_F(SimServerTest, AnswersMalformedChatRequestsWith400NamingTheField) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{not json", "body: not JSON"},
      {"[1, 2]", "body: expected an object, got an array"},
      {R"({"model": 7, "messages": [{"role": "user", "content": "hi"}]})",
       "model: expected a string, got a number"},
      {R"({"messages": [{"role": "user", "content": "hi"}]})",
       "model: missing"},
      {R"({"model": "m", "messages": "hi"})",
       "messages: must be a non-empty array"},
      {R"({"model": "m", "messages": []})",
       "messages: must be a non-empty array"},
      {R"({"model": "m", "messages": [{"role": "user", "content": null}]})",
       "messages[0].content: expected a string, got null"},
      {R"({"model": "m", "messages": [{"role": 1, "content": "hi"}]})",
       "messages[0].role: expected a string, got a number"},
      {R"({"model": "m", "messages": ["hi"]})", "messages[0].role: missing"},
      {R"({"model": "m", "stream": "yes",
           "messages": [{"role": "user", "content": "hi"}]})",
       "stream: expected a boolean, got a string"},
      {R"({"model": "m", "max_tokens": "16",
           "messages": [{"role": "user", "content": "hi"}]})",
       "max_tokens: expected an integer, got a string"},
      {R"({"model": "m", "max_tokens": 1e12,
           "messages": [{"role": "user", "content": "hi"}]})",
       "max_tokens: must be in [0, 1000000]"},
      {"{\"model\": \"caf\xe9\", \"messages\": []}", "body: not JSON"},
  };
  for (const Case& c : cases) {
    auto result = Post("/v1/chat/completions", c.body);
    ASSERT_TRUE(result) << c.body;
    EXPECT_EQ(result->status, 400) << c.body;
    EXPECT_THAT(result->body, HasSubstr(c.message)) << c.body;
  }
  auto fine = Post("/v1/chat/completions",
                   R"({"model": "m", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(fine);
  EXPECT_EQ(fine->status, 200) << fine->body;
  EXPECT_THAT(fine->body, HasSubstr("[sim]"));
}

TEST_F(SimServerTest, AnswersMalformedEmbeddingRequestsWith400) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"nope", "body: not JSON"},
      {R"({"input": 3})", "input: a string or a non-empty array"},
      {R"({"input": ["a", 2]})", "input[1]: expected a string, got a number"},
      {R"({"input": "a", "dimensions": "8"})", "dimensions: an integer"},
      {R"({"input": "a", "dimensions": 100000})", "dimensions: an integer"},
      {R"({"input": "a", "model": ["m"]})",
       "model: expected a string, got an array"},
  };
  for (const Case& c : cases) {
    auto result = Post("/v1/embeddings", c.body);
    ASSERT_TRUE(result) << c.body;
    EXPECT_EQ(result->status, 400) << c.body;
    EXPECT_THAT(result->body, HasSubstr(c.message)) << c.body;
  }
  auto fine = Post("/v1/embeddings", R"({"input": ["a b", "c"]})");
  ASSERT_TRUE(fine);
  EXPECT_EQ(fine->status, 200) << fine->body;
}

TEST_F(SimServerTest, RefusesOversizedRequestsAndLivesOn) {
  const std::string huge =
      R"({"model": "m", "messages": [{"role": "user", "content": ")" +
      std::string(9 << 20, 'x') + R"("}]})";
  auto result = Post("/v1/chat/completions", huge);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 413);
  auto fine = Post("/v1/chat/completions",
                   R"({"model": "m",
                       "messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(fine);
  EXPECT_EQ(fine->status, 200);
}

}  // namespace
}  // namespace arbiter::sim
