// The official Node clients against a running sealstore (SEALSTORE_URL), with retries
// off so a server bug fails at once. Started by tests/clients/test_node.py.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const {Storage} = require('@google-cloud/storage');
const {KeyManagementServiceClient} = require('@google-cloud/kms');
const {PassThroughClient} = require('google-auth-library');

const url = process.env.SEALSTORE_URL;
const project = process.env.SEALSTORE_PROJECT || 'test-project';
const u = new URL(url);
const storage = new Storage({apiEndpoint: url, projectId: project, retryOptions: {autoRetry: false}});
const kms = new KeyManagementServiceClient({
  fallback: true,
  apiEndpoint: u.hostname,
  port: Number(u.port),
  protocol: 'http',
  authClient: new PassThroughClient(),
});
// No retry codes: a failed call fails at once.
const noRetry = {
  retry: {
    retryCodes: [],
    backoffSettings: {
      initialRetryDelayMillis: 100, retryDelayMultiplier: 1, maxRetryDelayMillis: 100,
      initialRpcTimeoutMillis: 60000, rpcTimeoutMultiplier: 1, maxRpcTimeoutMillis: 60000,
      totalTimeoutMillis: 60000,
    },
  },
};
const rand = (n) => crypto.randomBytes(n);
const md5 = (b) => crypto.createHash('md5').update(b).digest('base64');
const id = (p) => `${p}-${crypto.randomBytes(5).toString('hex')}`;

async function bucket() {
  const [b] = await storage.createBucket(id('node'), {location: 'US'});
  return b;
}

async function cmekKey() {
  const [ring] = await kms.createKeyRing(
    {parent: `projects/${project}/locations/us`, keyRingId: id('ring'), keyRing: {}}, noRetry);
  const [key] = await kms.createCryptoKey(
    {parent: ring.name, cryptoKeyId: 'k', cryptoKey: {purpose: 'ENCRYPT_DECRYPT'}}, noRetry);
  return key;
}

test('KMS: key ring, key, createCryptoKeyVersion (body ""), encrypt/decrypt', async () => {
  const key = await cmekKey();
  const [v] = await kms.createCryptoKeyVersion({parent: key.name}, noRetry);
  assert.match(v.name, /cryptoKeyVersions\/2$/);
  const plaintext = rand(100);
  const [enc] = await kms.encrypt({name: key.name, plaintext}, noRetry);
  const [dec] = await kms.decrypt({name: key.name, ciphertext: enc.ciphertext}, noRetry);
  assert.deepEqual(Buffer.from(dec.plaintext), plaintext);
});

test('file.save without chunkSize: one request with Content-Range bytes 0-*/*', async () => {
  const b = await bucket();
  for (const size of [1024, 9 * 1024 * 1024 + 17]) {
    const data = rand(size);
    const f = b.file(`save-${size}`);
    await f.save(data, {resumable: true});
    const [meta] = await f.getMetadata();
    assert.equal(meta.md5Hash, md5(data));
    const [got] = await f.download();
    assert.ok(got.equals(data), `save ${size}`);
  }
});

test('file.save with chunkSize: chunked resumable upload', async () => {
  const b = await bucket();
  const data = rand(3 * 1024 * 1024 + 5);
  const f = b.file('chunked');
  await f.save(data, {resumable: true, chunkSize: 1024 * 1024});
  const [got] = await f.download();
  assert.ok(got.equals(data));
});

test('bucket.upload of a file, multipart and resumable, and createWriteStream', async () => {
  const b = await bucket();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-up-'));
  for (const [name, size, resumable] of [['small', 2048, false], ['large', 9 * 1024 * 1024 + 3, true]]) {
    const data = rand(size);
    const p = path.join(dir, name);
    fs.writeFileSync(p, data);
    await b.upload(p, {destination: name, resumable});
    const [got] = await b.file(name).download();
    assert.ok(got.equals(data), name);
  }
  const data = rand(9 * 1024 * 1024);
  await new Promise((resolve, reject) => {
    const s = b.file('stream').createWriteStream();
    s.on('error', reject).on('finish', resolve);
    s.end(data);
  });
  const [got] = await b.file('stream').download();
  assert.ok(got.equals(data));
});

test('CMEK and CSEK writes and reads', async () => {
  const b = await bucket();
  const key = await cmekKey();
  const data = rand(300 * 1024);
  const f = b.file('cmek', {kmsKeyName: key.name});
  await f.save(data, {resumable: false});
  const [meta] = await b.file('cmek').getMetadata();
  assert.ok(meta.kmsKeyName.startsWith(key.name + '/cryptoKeyVersions/'), meta.kmsKeyName);
  assert.ok((await b.file('cmek').download())[0].equals(data));
  const big = rand(9 * 1024 * 1024 + 1);
  await b.file('cmek-big', {kmsKeyName: key.name}).save(big);
  assert.ok((await b.file('cmek-big').download())[0].equals(big));

  const csek = rand(32);
  await b.file('csek', {encryptionKey: csek}).save(data);
  assert.ok((await b.file('csek', {encryptionKey: csek}).download())[0].equals(data));
  await b.file('csek-big', {encryptionKey: csek}).save(big);
  assert.ok((await b.file('csek-big', {encryptionKey: csek}).download())[0].equals(big));
  await assert.rejects(b.file('csek').download(), (e) => e.code === 400);
  await assert.rejects(b.file('csek', {encryptionKey: rand(32)}).download(), (e) => e.code === 400);
});

test('copy, move and preconditions', async () => {
  const b = await bucket();
  const data = rand(5000);
  await b.file('a').save(data);
  await b.file('a').copy(b.file('b'));
  assert.ok((await b.file('b').download())[0].equals(data));
  await b.file('b').move('c');
  assert.ok((await b.file('c').download())[0].equals(data));
  const [exists] = await b.file('b').exists();
  assert.equal(exists, false);
  await assert.rejects(
    b.file('a').save(rand(10), {preconditionOpts: {ifGenerationMatch: 0}, resumable: false}),
    (e) => e.code === 412);
});
