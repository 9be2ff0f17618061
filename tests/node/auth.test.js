// The official `openai` npm client against a real `arbiter serve` with API
// keys: the key is the client's apiKey, as with OpenAI itself.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const OpenAI = require('openai');
const { startArbiter, createKey } = require('./serve');

let arbiter;
let acme;
let beta;
const question = [{ role: 'user', content: 'How do I reset my password?' }];

function client(apiKey) {
  return new OpenAI({ baseURL: `http://127.0.0.1:${arbiter.http}/v1`, apiKey, maxRetries: 0 });
}

before(async () => {
  acme = createKey(['--tenant', 'acme', '--label', 'node']);
  beta = createKey(['--tenant', 'beta']);
  const admin = createKey(['--admin']);
  arbiter = await startArbiter({
    extraConfig: `
auth:
  mode: keys
  tenants:
    - name: acme
      keys: [${acme.entry}]
      allowed_routes: [prompted, rag]
    - name: beta
      keys: [${beta.entry}]
  admin_keys: [${admin.entry}]
`,
  });
});

after(() => arbiter?.server.kill('SIGTERM'));

test('a key the gateway does not know raises AuthenticationError', async () => {
  await assert.rejects(
    client('ak_not-a-key').chat.completions.create({ model: 'arbiter/auto', messages: question }),
    (error) => {
      assert.ok(error instanceof OpenAI.AuthenticationError, `${error.constructor.name}: ${error}`);
      assert.equal(error.status, 401);
      assert.equal(error.headers['www-authenticate'], 'Bearer');
      assert.match(error.message, /unknown API key/);
      return true;
    });
  await assert.rejects(client('ak_not-a-key').models.list(), OpenAI.AuthenticationError);
});

test('a tenant key answers through its allowed routes only', async () => {
  const completion = await client(acme.key).chat.completions.create({
    model: 'arbiter/auto', messages: question,
  });
  assert.match(completion.choices[0].message.content, /^\[sim\]/);
  assert.ok(['prompted', 'rag'].includes(completion.arbiter.route), completion.arbiter.route);
  assert.match(completion.arbiter.request_id, /^arb3_/);

  await assert.rejects(
    client(acme.key).chat.completions.create({ model: 'fine-tuned', messages: question }),
    (error) => {
      assert.ok(error instanceof OpenAI.PermissionDeniedError, `${error.constructor.name}: ${error}`);
      assert.match(error.message, /tenant acme may not use route fine-tuned/);
      return true;
    });

  const models = [];
  for await (const model of client(acme.key).models.list()) models.push(model.id);
  assert.deepEqual(models.sort(), ['arbiter/auto', 'prompted', 'rag']);
});

test('a streamed answer works with a good key', async () => {
  const stream = await client(beta.key).chat.completions.create({
    model: 'fine-tuned', messages: question, stream: true,
  });
  let text = '';
  for await (const chunk of stream) {
    for (const choice of chunk.choices) text += choice.delta.content ?? '';
  }
  assert.match(text, /^\[sim\]/);
});
