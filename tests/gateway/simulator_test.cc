#include "gateway/sim/simulator.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbiter::sim {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kQuestions[] = R"(
{"id": "q1", "task": "faq", "question": "How do I reset my password?", "answer": "Settings > Security > Reset password"}
{"id": "q2", "task": "faq", "question": "Where are my exports?", "answer": "the Exports tab"}
{"id": "q3", "task": "billing", "question": "How much is Plus?", "answer": "$7.50 per member per month"}
)";

std::unique_ptr<Simulator> MakeSim(double accuracy, int output_tokens = 40,
                                   uint64_t seed = 1) {
  v1::SimBackend config;
  config.set_seed(seed);
  config.set_output_tokens(output_tokens);
  config.set_time_to_first_token_seconds(0.1);
  config.set_seconds_per_token(0.01);
  v1::SimModel* model = config.add_models();
  model->set_name("m");
  model->set_accuracy(accuracy);
  auto questions = ParseQuestionSet(kQuestions);
  EXPECT_TRUE(questions.ok()) << questions.status();
  auto sim = Simulator::Create(config, *std::move(questions));
  EXPECT_TRUE(sim.ok()) << sim.status();
  return *std::move(sim);
}

std::vector<SimMessage> Ask(const std::string& question,
                            const std::string& context = "") {
  std::vector<SimMessage> messages;
  if (!context.empty()) messages.push_back({"system", context});
  messages.push_back({"user", question});
  return messages;
}

TEST(SimulatorTest, AlwaysRightAtAccuracyOneAndSaysItIsASimulator) {
  auto sim = MakeSim(1.0);
  SimAnswer answer = sim->Answer("m", Ask("How do I reset my password?"), 0);
  EXPECT_TRUE(answer.correct);
  EXPECT_THAT(answer.text, StartsWith("[sim]"));
  EXPECT_THAT(answer.text, HasSubstr("Settings > Security > Reset password"));
}

TEST(SimulatorTest, WrongAnswerNamesAnotherAnswerOfTheTask) {
  auto sim = MakeSim(0.0);
  SimAnswer answer = sim->Answer("m", Ask("how do i RESET my password"), 0);
  EXPECT_TRUE(answer.known_question);
  EXPECT_FALSE(answer.correct);
  EXPECT_THAT(answer.text, HasSubstr("the Exports tab"));
}

TEST(SimulatorTest, GoldAnswerInContextMakesItCorrect) {
  auto sim = MakeSim(0.0);
  SimAnswer answer = sim->Answer(
      "m",
      Ask("How much is Plus?", "[1] Plus costs $7.50 per member per month."),
      0);
  EXPECT_TRUE(answer.correct);
}

TEST(SimulatorTest, ContextWithoutTheAnswerFallsBackToBaseAccuracy) {
  auto sim = MakeSim(0.0);
  EXPECT_FALSE(
      sim->Answer("m", Ask("How much is Plus?", "[1] Unrelated text."), 0)
          .correct);
}

TEST(SimulatorTest, AccuracyOverManyQuestionsMatchesConfig) {
  v1::SimBackend config;
  config.set_seed(3);
  v1::SimModel* model = config.add_models();
  model->set_name("m");
  model->set_accuracy(0.3);
  (*model->mutable_task_accuracy())["faq"] = 0.8;
  std::vector<LabeledQuestion> questions;
  for (int i = 0; i < 4000; ++i) {
    questions.push_back({"q" + std::to_string(i), i % 2 ? "faq" : "billing",
                         "question number " + std::to_string(i),
                         "answer " + std::to_string(i)});
  }
  auto sim = Simulator::Create(config, questions);
  ASSERT_TRUE(sim.ok());
  int faq_correct = 0;
  int billing_correct = 0;
  for (const LabeledQuestion& q : questions) {
    bool correct = (*sim)->Answer("m", Ask(q.question), 0).correct;
    (q.task == "faq" ? faq_correct : billing_correct) += correct;
  }
  EXPECT_NEAR(faq_correct / 2000.0, 0.8, 0.04);
  EXPECT_NEAR(billing_correct / 2000.0, 0.3, 0.04);
}

TEST(SimulatorTest, SameSeedSameAnswersOtherSeedOtherAnswers) {
  auto a = MakeSim(0.5, 40, 1);
  auto b = MakeSim(0.5, 40, 1);
  for (const char* q : {"How do I reset my password?", "Where are my exports?",
                        "How much is Plus?"}) {
    EXPECT_EQ(a->Answer("m", Ask(q), 0).text, b->Answer("m", Ask(q), 0).text);
  }
}

TEST(SimulatorTest, OutputLengthAndDelayFollowConfig) {
  auto sim = MakeSim(1.0, 40);
  SimAnswer answer = sim->Answer("m", Ask("How much is Plus?"), 0);
  EXPECT_GE(answer.output_tokens, 40);
  EXPECT_LE(answer.output_tokens, 43);
  EXPECT_EQ(answer.delay, absl::Seconds(0.1 + 0.01 * answer.output_tokens));
}

TEST(SimulatorTest, MaxTokensCutsTheAnswer) {
  auto sim = MakeSim(1.0, 40);
  SimAnswer answer = sim->Answer("m", Ask("How much is Plus?"), 3);
  EXPECT_LE(answer.output_tokens, 3);
  EXPECT_FALSE(answer.correct);
}

TEST(SimulatorTest, UnknownQuestionGetsAnHonestAnswer) {
  auto sim = MakeSim(1.0);
  SimAnswer answer = sim->Answer("m", Ask("What is the meaning of life?"), 0);
  EXPECT_FALSE(answer.known_question);
  EXPECT_THAT(answer.text, HasSubstr("simulated model"));
}

TEST(SimulatorTest, BadQuestionSetNamesTheLine) {
  auto parsed = ParseQuestionSet(
      "{\"id\": \"a\", \"task\": \"t\", \"question\": \"q\", \"answer\": "
      "\"x\"}\nnot json\n");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("line 2"));
  parsed = ParseQuestionSet(
      "{\"id\": \"a\", \"task\": \"t\", \"question\": \"q\"}\n");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("\"answer\""));
}

}  // namespace
}  // namespace arbiter::sim
