// The official `openai` npm client against a real `arbiter serve`, as an
// existing application would switch: only the base URL changes.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const OpenAI = require('openai');
const { startArbiter, metric, eventually } = require('./serve');

let arbiter;
let client;
const question = [{ role: 'user', content: 'How do I reset my password?' }];

before(async () => {
  // 48 tokens at 20 ms: a stream lasts about a second, long enough to abort.
  arbiter = await startArbiter({ secondsPerToken: 0.02 });
  client = new OpenAI({
    baseURL: `http://127.0.0.1:${arbiter.http}/v1`, apiKey: 'unused', maxRetries: 0,
  });
});

after(() => arbiter?.server.kill('SIGTERM'));

test('chat.completions.create answers through the route the policy picks', async () => {
  const completion = await client.chat.completions.create({
    model: 'arbiter/auto', messages: question,
  });
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.choices[0].message.content, /^\[sim\]/);
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.ok(completion.usage.prompt_tokens > 0);
  assert.equal(completion.usage.total_tokens,
    completion.usage.prompt_tokens + completion.usage.completion_tokens);
  assert.ok(['prompted', 'fine-tuned', 'rag'].includes(completion.arbiter.route));
  assert.ok(completion.arbiter.cost_usd > 0);
  assert.match(completion.arbiter.request_id, /^arb2_/);
});

test('a streamed answer assembles to the unary answer for the same seed', async () => {
  const request = { model: 'rag', messages: question, seed: 42 };
  const unary = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({
    ...request, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let chunks = 0;
  let first;
  let usage;
  let finish;
  for await (const chunk of stream) {
    if (chunks++ === 0) first = chunk;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, unary.choices[0].message.content);
  assert.ok(chunks > 3, `${chunks} chunks`);
  assert.equal(first.arbiter.route, 'rag');
  assert.ok(first.arbiter.citations.length > 0);
  assert.equal(finish, unary.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, unary.usage.completion_tokens);
});

test('models.list names arbiter/auto and every route', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids, ['arbiter/auto', 'prompted', 'fine-tuned', 'rag']);
});

test('embeddings.create embeds with the corpus embedder', async () => {
  const response = await client.embeddings.create({
    model: 'arbiter', input: ['reset my password', 'refund policy'],
  });
  assert.equal(response.data.length, 2);
  assert.equal(response.data[0].embedding.length, 1024);
  assert.ok(response.data[0].embedding.some((x) => x !== 0));
});

test('a bad request surfaces as BadRequestError with arbiter\'s message', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'arbiter/auto', messages: question, temperature: 5 }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, error.constructor.name);
      assert.equal(error.status, 400);
      assert.match(error.message, /temperature/);
      assert.equal(error.param, 'temperature');
      return true;
    });
});

test('an unknown model surfaces as NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-9', messages: question }),
    (error) => {
      assert.ok(error instanceof OpenAI.NotFoundError, error.constructor.name);
      assert.match(error.message, /unknown model "gpt-9"/);
      return true;
    });
});

test('feedback through /v1/feedback is counted once', async () => {
  const completion = await client.chat.completions.create({ model: 'prompted', messages: question });
  const send = () => fetch(`http://127.0.0.1:${arbiter.http}/v1/feedback`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ request_id: completion.arbiter.request_id, correct: true }),
  });
  const first = await send();
  assert.equal(first.status, 200);
  assert.equal((await first.json()).route, 'prompted');
  const again = await send();
  assert.equal(again.status, 409);
  assert.match((await again.json()).error.message, /already counted/);
});

test('an aborted stream cancels the backend and bills what came as cancelled', async () => {
  const labels = ['route="prompted"', 'outcome="cancelled"'];
  const before = await metric(arbiter.metrics, 'arbiter_requests_total', labels);
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model: 'prompted', messages: question, stream: true }, { signal: controller.signal });
  let deltas = 0;
  let finished = false;
  let requestId;
  try {
    for await (const chunk of stream) {
      requestId ??= chunk.arbiter?.request_id;
      if (chunk.choices[0]?.delta?.content && ++deltas === 3) controller.abort();
      if (chunk.choices[0]?.finish_reason) finished = true;
    }
  } catch (error) {
    assert.ok(error instanceof OpenAI.APIUserAbortError || error.name === 'AbortError',
      `${error.constructor.name}: ${error.message}`);
  }
  assert.equal(deltas, 3, 'the stream went on after the abort');
  assert.ok(!finished, 'the answer was whole: nothing was cancelled');
  const cancelled = await eventually(async () =>
    (await metric(arbiter.metrics, 'arbiter_requests_total', labels)) > before);
  assert.ok(cancelled, 'no request counted with outcome="cancelled"');
  assert.ok(await metric(arbiter.metrics, 'arbiter_cancelled_cost_usd_total', labels) > 0);
  // The first chunk carried its id, but there is no answer to judge.
  assert.match(requestId ?? '', /^arb2_/);
  const feedback = await fetch(`http://127.0.0.1:${arbiter.http}/v1/feedback`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ request_id: requestId, correct: true }),
  });
  assert.equal(feedback.status, 400);
  assert.match((await feedback.json()).error.message, /ended without an answer/);
});

test('a tool-calling conversation goes through turn after turn', async () => {
  // What an app sends after running the tool the model asked for.
  const completion = await client.chat.completions.create({
    model: 'prompted',
    tools: [{ type: 'function', function: { name: 'kb', parameters: { type: 'object' } } }],
    messages: [
      ...question,
      {
        role: 'assistant', content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'kb', arguments: '{}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: 'Settings > Account > Reset' },
    ],
  }).catch((error) => error);
  // The sim backend takes no tools: it refuses them by name, after the
  // messages were accepted.
  assert.ok(completion instanceof OpenAI.BadRequestError, String(completion));
  assert.match(completion.message, /tools/);
  assert.doesNotMatch(completion.message, /messages/);
  const answered = await client.chat.completions.create({
    model: 'prompted',
    messages: [
      ...question,
      {
        role: 'assistant', content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'kb', arguments: '{}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: 'Settings > Account > Reset' },
    ],
  });
  assert.match(answered.choices[0].message.content, /^\[sim\]/);
});
