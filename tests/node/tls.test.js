// Node's clients through TLS to a real `arbiter serve`: @grpc/grpc-js with
// the test CA, and the official `openai` client over HTTPS with an agent
// that trusts it; both fail cleanly without the CA. The certificates are
// made here with the openssl CLI and thrown away after.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const OpenAI = require('openai');
const { startArbiter } = require('./serve');

const protoRoot = path.resolve(__dirname, '../../proto');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arbiter-node-tls-'));
const file = (name) => path.join(dir, name);
const question = [{ role: 'user', content: 'How do I reset my password?' }];

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

// A CA and a server certificate it signed for 127.0.0.1 and localhost.
function makePki() {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=arbiter node test CA');
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  fs.writeFileSync(file('san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext');
}

let arbiter;
let Gateway;

before(async () => {
  makePki();
  arbiter = await startArbiter({
    server: `  tls: {cert_file: ${file('server.pem')}, key_file: ${file('server.key')}}\n`,
  });
  const definition = protoLoader.loadSync('arbiter/v1/gateway.proto', {
    keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
    includeDirs: [protoRoot],
  });
  Gateway = grpc.loadPackageDefinition(definition).arbiter.v1.Gateway;
});

after(() => {
  arbiter?.server.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
});

function infer(credentials) {
  const client = new Gateway(`127.0.0.1:${arbiter.grpc}`, credentials);
  return new Promise((resolve) => {
    client.Infer({ messages: [{ role: 'ROLE_USER', content: 'Hi' }] },
      { deadline: Date.now() + 5000 }, (error, response) => {
        client.close();
        resolve({ error, response });
      });
  });
}

test('grpc-js reaches Infer over TLS with the CA', async () => {
  const { error, response } = await infer(
    grpc.credentials.createSsl(fs.readFileSync(file('ca.pem'))));
  assert.equal(error, null);
  assert.match(response.text, /^\[sim\]/);
});

test('grpc-js without the CA, or in plain text, fails with UNAVAILABLE', async () => {
  const untrusted = await infer(grpc.credentials.createSsl());
  assert.equal(untrusted.error?.code, grpc.status.UNAVAILABLE);
  const plain = await infer(grpc.credentials.createInsecure());
  assert.equal(plain.error?.code, grpc.status.UNAVAILABLE);
});

test('the openai client answers over HTTPS with an agent that trusts the CA', async () => {
  const client = new OpenAI({
    baseURL: `https://127.0.0.1:${arbiter.http}/v1`, apiKey: 'unused', maxRetries: 0,
    httpAgent: new https.Agent({ ca: fs.readFileSync(file('ca.pem')) }),
  });
  const completion = await client.chat.completions.create({
    model: 'arbiter/auto', messages: question,
  });
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.choices[0].message.content, /^\[sim\]/);
  const stream = await client.chat.completions.create({
    model: 'rag', messages: question, stream: true,
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.match(text, /^\[sim\]/);
});

test('the openai client without the CA fails with a connection error', async () => {
  const client = new OpenAI({
    baseURL: `https://127.0.0.1:${arbiter.http}/v1`, apiKey: 'unused', maxRetries: 0,
  });
  await assert.rejects(
    client.chat.completions.create({ model: 'arbiter/auto', messages: question }),
    (error) => error instanceof OpenAI.APIConnectionError,
  );
});
